#include "model/token_choice.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/ops.h"
#include "wisp/errors.h"

namespace wisp::model {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void forbid_range(std::span<float> logits, int begin, int end) {
  begin = std::max(begin, 0);
  end = std::min(end, static_cast<int>(logits.size()));
  for (int i = begin; i < end; ++i) logits[static_cast<size_t>(i)] = kNegInf;
}

// The `top` largest entries of row (highest first; equal values keep the lower index first; −inf entries
// count, as in the reference's top-k, when fewer are finite).
void top_entries(std::span<const float> row, int top, TokenChoice& out) {
  struct Entry {
    float value;
    int id;
  };
  std::vector<Entry> best;
  auto better = [](const Entry& a, const Entry& b) { return a.value > b.value; };
  for (size_t i = 0; i < row.size(); ++i) {
    // Once `top` entries are held, jump to the next value above the weakest (a vectorised scan).
    if (static_cast<int>(best.size()) == top) {
      i += static_cast<size_t>(ops::first_above(row.subspan(i), best.back().value));
      if (i >= row.size()) break;
    }
    const Entry e{row[i], static_cast<int>(i)};
    best.insert(std::upper_bound(best.begin(), best.end(), e, better), e);
    if (static_cast<int>(best.size()) > top) best.pop_back();
  }
  for (const Entry& e : best) {
    out.ids.push_back(e.id);
    out.logprobs.push_back(e.value);
  }
}

}  // namespace

void apply_rules(std::span<float> logits, const TokenRules& rules) {
  for (const auto& [begin, end] : rules.forbidden) forbid_range(logits, begin, end);
  const int ts = rules.timestamp_begin;
  if (ts < 0 || ts > static_cast<int>(logits.size())) return;
  // Both sides would be shifted by the same log-normaliser, so raw logits compare the same.
  const double ts_lse = ops::log_sum_exp(logits.subspan(static_cast<size_t>(ts)));
  const float max_text = ops::max_value(logits.first(static_cast<size_t>(ts)));
  if (ts_lse > static_cast<double>(max_text)) forbid_range(logits, 0, ts);
}

int sample_from_logprobs(std::span<const float> logprobs, double temperature, double uniform) {
  float mx = kNegInf;
  for (float x : logprobs) mx = std::max(mx, x);
  if (mx == kNegInf) throw InternalError("sampling: every token is disabled");
  const double inv_t = 1.0 / temperature;
  double total = 0.0;
  for (float x : logprobs) {
    if (x != kNegInf) total += std::exp(static_cast<double>(x - mx) * inv_t);
  }
  const double u = uniform * total;
  double cum = 0.0;
  int last = -1;
  for (size_t i = 0; i < logprobs.size(); ++i) {
    if (logprobs[i] == kNegInf) continue;
    cum += std::exp(static_cast<double>(logprobs[i] - mx) * inv_t);
    last = static_cast<int>(i);
    if (cum > u) return last;
  }
  return last;  // u landed on the rounding slack at the very end
}

TokenChoice choose_tokens(std::span<float> logits, const TokenQuery& query) {
  if (query.top < 1) throw InvalidArgument("choose_tokens: at least one token must be asked for");
  apply_rules(logits, query.rules);
  if (ops::max_value(logits) == kNegInf) throw InternalError("decode: the logit rules left no token");
  ops::log_softmax_(logits);
  TokenChoice c;
  if (query.temperature > 0) {
    const int id = sample_from_logprobs(logits, query.temperature, query.uniform);
    c.ids.push_back(id);
    c.logprobs.push_back(logits[static_cast<size_t>(id)]);
  } else if (query.top == 1) {
    const auto id = static_cast<size_t>(ops::argmax(logits));
    c.ids.push_back(static_cast<int>(id));
    c.logprobs.push_back(logits[id]);
  } else {
    top_entries(logits, query.top, c);
  }
  return c;
}

}  // namespace wisp::model
