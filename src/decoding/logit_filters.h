// The reference's logit rules, applied to one row of logits before the log-softmax: suppressed tokens,
// blank suppression at the first sampled step, and the timestamp grammar.
#pragma once

#include <span>
#include <vector>

#include "model/token_choice.h"
#include "tokenizer/tokenizer.h"

namespace wisp::decoding {

struct FilterConfig {
  std::vector<int> suppress;             // suppressed at every step
  std::vector<int> suppress_begin;       // suppressed at the first sampled step (blank " " and eot)
  bool timestamps = true;                // apply the timestamp rules (the prompt did not end in <|notimestamps|>)
  int max_initial_timestamp_index = 50;  // first timestamp at most 1.0 s (50 × 0.02 s); < 0 = no limit
  // The first sampled token must be a timestamp (at most max_initial_timestamp_index). CTranslate2 applies
  // this only when decoding starts right after the SOT sequence: after a forced prefix (faster-whisper's
  // `prefix`, "<|0.00|> text") the first free token has no timestamp rule at all.
  bool initial_timestamp = true;
};

// The rules after `sampled` (the tokens generated so far in this window, prompt excluded) as data, for
// model::apply_rules or a device backend (model/token_choice.h).
model::TokenRules token_rules(std::span<const int> sampled, const FilterConfig& cfg,
                              const tokenizer::SpecialTokens& sp);

// Sets to -inf every logit the rules forbid after `sampled`: model::apply_rules(logits, token_rules(...)).
// logits [n_vocab].
void apply_filters(std::span<float> logits, std::span<const int> sampled, const FilterConfig& cfg,
                   const tokenizer::SpecialTokens& sp);

}  // namespace wisp::decoding
