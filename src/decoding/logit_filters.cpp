#include "decoding/logit_filters.h"

#include <algorithm>
#include <limits>

namespace wisp::decoding {

namespace {

constexpr int kEnd = std::numeric_limits<int>::max();  // a range to the end of the vocabulary

// Each id as a one-token range, neighbours merged.
void forbid_ids(std::vector<std::pair<int, int>>& ranges, std::vector<int> ids) {
  std::sort(ids.begin(), ids.end());
  for (int id : ids) {
    if (id < 0) continue;
    if (!ranges.empty() && ranges.back().second == id) {
      ranges.back().second = id + 1;
    } else if (ranges.empty() || ranges.back().second < id) {
      ranges.emplace_back(id, id + 1);
    }
  }
}

}  // namespace

model::TokenRules token_rules(std::span<const int> sampled, const FilterConfig& cfg,
                              const tokenizer::SpecialTokens& sp) {
  model::TokenRules rules;
  auto& forbid = rules.forbidden;
  std::vector<int> ids = cfg.suppress;
  if (sampled.empty()) ids.insert(ids.end(), cfg.suppress_begin.begin(), cfg.suppress_begin.end());
  // <|notimestamps|> is never sampled when timestamps are on.
  if (cfg.timestamps && sp.no_timestamps >= 0) ids.push_back(sp.no_timestamps);
  forbid_ids(forbid, std::move(ids));
  if (!cfg.timestamps) return rules;

  const int ts = sp.timestamp_begin;
  const size_t n = sampled.size();
  if (n == 0 && !cfg.initial_timestamp) return rules;
  const bool last_ts = n >= 1 && sampled[n - 1] >= ts;
  const bool penultimate_ts = n < 2 || sampled[n - 2] >= ts;
  if (last_ts) {
    if (penultimate_ts) {
      forbid.emplace_back(ts, kEnd);  // two timestamps in a row: text (or eot) must follow
    } else {
      forbid.emplace_back(0, sp.eot);  // a timestamp closing a segment: another timestamp or eot
    }
  }
  // Timestamps never decrease; a segment's closing timestamp may equal its opening one only when it
  // directly follows it (handled by the pair rule above), otherwise they strictly increase.
  for (size_t i = n; i-- > 0;) {
    if (sampled[i] >= ts) {
      const int last = sampled[i];
      forbid.emplace_back(ts, (last_ts && !penultimate_ts) ? last : last + 1);
      break;
    }
  }
  if (n == 0) {
    forbid.emplace_back(0, ts);  // the window opens with a timestamp
    if (cfg.max_initial_timestamp_index >= 0) forbid.emplace_back(ts + cfg.max_initial_timestamp_index + 1, kEnd);
  }
  // If the timestamps together are more likely than any single text token, force a timestamp.
  rules.timestamp_begin = ts;
  return rules;
}

void apply_filters(std::span<float> logits, std::span<const int> sampled, const FilterConfig& cfg,
                   const tokenizer::SpecialTokens& sp) {
  model::apply_rules(logits, token_rules(sampled, cfg, sp));
}

}  // namespace wisp::decoding
