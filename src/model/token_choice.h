// What a decode step hands back when the search needs only a few tokens of a row, not its 51,865 logits:
// the logit rules of that row as data (forbidden ranges and the timestamp test), then the most likely tokens
// of the log-softmax, or one token sampled at a temperature. A device backend applies the rules and chooses on
// the device and copies back a few numbers per row; choose_tokens() is the host form and the reference.
#pragma once

#include <span>
#include <utility>
#include <vector>

namespace wisp::model {

// The logit rules of one row (decoding/logit_filters.h builds them from the reference's rules).
struct TokenRules {
  std::vector<std::pair<int, int>> forbidden;  // [begin, end) ranges of token ids whose logit becomes −inf
  // ≥ 0 (the first timestamp token): after the ranges, if log Σ exp over the ids ≥ timestamp_begin exceeds
  // every logit below it, the ids below it are forbidden too (the reference's "timestamps are more likely
  // than any text token" rule). −1: no such test.
  int timestamp_begin = -1;
};

struct TokenQuery {
  TokenRules rules;
  int top = 1;               // how many of the most likely tokens (greedy 1, beam search 2 × beam)
  double temperature = 0.0;  // > 0: instead one token sampled at this temperature ...
  double uniform = 0.0;      // ... with this draw from [0, 1) (sample_token's inverse-CDF walk)
};

struct TokenChoice {
  std::vector<int> ids;         // most likely first (equal log-probabilities: the lower id first); sampled: one
  std::vector<float> logprobs;  // their log-probabilities after the rules
};

// Sets the forbidden logits of `logits` to −inf and applies the timestamp test (rules above).
void apply_rules(std::span<float> logits, const TokenRules& rules);

// The host form: apply_rules, log-softmax in place, then the query's choice. Throws InternalError when the
// rules leave no token.
TokenChoice choose_tokens(std::span<float> logits, const TokenQuery& query);

// The token that sampling at `temperature` picks from log-probabilities with the draw `uniform` in [0, 1):
// the first id whose cumulative weight exp((lp − max) / temperature), summed in id order in double, exceeds
// uniform × the total. Throws InternalError when every log-probability is −inf.
int sample_from_logprobs(std::span<const float> logprobs, double temperature, double uniform);

}  // namespace wisp::model
