#include "decoding/logit_filters.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/ops.h"

namespace wisp::decoding {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void forbid_range(std::span<float> logits, int begin, int end) {
  begin = std::max(begin, 0);
  end = std::min(end, static_cast<int>(logits.size()));
  for (int i = begin; i < end; ++i) logits[static_cast<size_t>(i)] = kNegInf;
}

void forbid(std::span<float> logits, const std::vector<int>& ids) {
  for (int id : ids) {
    if (id >= 0 && id < static_cast<int>(logits.size())) logits[static_cast<size_t>(id)] = kNegInf;
  }
}

}  // namespace

void apply_filters(std::span<float> logits, std::span<const int> sampled, const FilterConfig& cfg,
                   const tokenizer::SpecialTokens& sp) {
  const int n_vocab = static_cast<int>(logits.size());
  if (sampled.empty()) forbid(logits, cfg.suppress_begin);
  forbid(logits, cfg.suppress);
  if (!cfg.timestamps) return;

  const int ts = sp.timestamp_begin;
  // <|notimestamps|> is never sampled when timestamps are on.
  if (sp.no_timestamps >= 0) logits[static_cast<size_t>(sp.no_timestamps)] = kNegInf;

  const size_t n = sampled.size();
  if (n == 0 && !cfg.initial_timestamp) return;
  const bool last_ts = n >= 1 && sampled[n - 1] >= ts;
  const bool penultimate_ts = n < 2 || sampled[n - 2] >= ts;
  if (last_ts) {
    if (penultimate_ts) {
      forbid_range(logits, ts, n_vocab);  // two timestamps in a row: text (or eot) must follow
    } else {
      forbid_range(logits, 0, sp.eot);  // a timestamp closing a segment: another timestamp or eot
    }
  }
  // Timestamps never decrease; a segment's closing timestamp may equal its opening one only when it
  // directly follows it (handled by the pair rule above), otherwise they strictly increase.
  for (size_t i = n; i-- > 0;) {
    if (sampled[i] >= ts) {
      const int last = sampled[i];
      forbid_range(logits, ts, (last_ts && !penultimate_ts) ? last : last + 1);
      break;
    }
  }
  if (n == 0) {
    forbid_range(logits, 0, ts);  // the window opens with a timestamp
    if (cfg.max_initial_timestamp_index >= 0) forbid_range(logits, ts + cfg.max_initial_timestamp_index + 1, n_vocab);
  }

  // If the timestamps together are more likely than any single text token, force a timestamp.
  // (Both sides would be shifted by the same log-normaliser, so raw logits compare the same.)
  // (Vectorised helpers: this runs on every row of every step.)
  const double ts_lse = ops::log_sum_exp(logits.subspan(static_cast<size_t>(ts)));
  const float max_text = ops::max_value(logits.first(static_cast<size_t>(ts)));
  if (ts_lse > static_cast<double>(max_text)) forbid_range(logits, 0, ts);
}

}  // namespace wisp::decoding
