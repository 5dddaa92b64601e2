// Decoding one 30 s window: the prompt pass every search shares, greedy decoding, and language detection,
// as the reference (CTranslate2 under faster-whisper) does them. Beam search and sampling live in
// beam_search.h and sampling.h; the temperature fallback that picks between them in fallback.h.
#pragma once

#include <cmath>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "decoding/logit_filters.h"
#include "model/whisper.h"
#include "tokenizer/tokenizer.h"

namespace wisp::decoding {

struct WindowResult {
  std::vector<int> tokens;      // the forced prefix (if any), then the sampled tokens without <|endoftext|>
  double sum_logprob = 0.0;     // over the sampled tokens and the end token (a forced prefix scores 0)
  double avg_logprob = 0.0;     // sum_logprob / (tokens + 1), as the reference reports it
  double score = 0.0;           // what the search ranked by: sum_logprob / tokens^length_penalty
  double no_speech_prob = 0.0;  // P(<|nospeech|>) at the <|startoftranscript|> position
};

// The decoder state after the prompt (previous text, SOT sequence, <|notimestamps|>, a forced prefix):
// computed once per window and shared by every search and temperature of the fallback.
//
// A forced prefix (faster-whisper's `prefix`: "<|0.00|> text") behaves as in CTranslate2, which forces it
// token by token: it is part of every result and of its length, it scores 0, and the logit rules start
// after it (so the first free token has no timestamp rule). The searches handle that from `forced`.
struct PromptState {
  model::KVCache cache;       // self-attention K/V of the prompt (cache.length = prompt size)
  std::vector<float> logits;  // [n_vocab] raw logits after the last prompt token (the first free step)
  double no_speech_prob = 0.0;
  std::vector<int> forced;  // the prompt's last tokens that are a forced prefix of the output
};

// Runs `prompt` (with <|startoftranscript|> at `sot_index`; its last `n_forced` tokens a forced prefix)
// through the decoder.
PromptState run_prompt(const model::WhisperModel& model, const model::CrossKV& cross, std::span<const int> prompt,
                       size_t sot_index, const tokenizer::SpecialTokens& sp, size_t n_forced = 0);

// The filters of a search after `prompt`: the first free token has the initial timestamp rule only when
// nothing is forced before it.
FilterConfig filters_after(const FilterConfig& filters, const PromptState& prompt);
// Fills tokens (forced prefix + free tokens), sum/avg log-probability and score from a search's free
// tokens and their float sum, counting the forced prefix in the length, as the reference does.
WindowResult finish_result(const PromptState& prompt, std::vector<int> free_tokens, float sum_logprob,
                           double length_penalty);

// finish_result of the candidate (a finished beam, a sample: members `tokens`, free tokens, and `sum`, their
// float log-probability) that ranks first by sum / length^length_penalty, the length counting a forced prefix
// as CTranslate2 does; the first of equal scores wins. candidates is not empty.
template <class Candidate>
WindowResult finish_best(const PromptState& prompt, std::vector<Candidate>& candidates, double length_penalty) {
  const float penalty = static_cast<float>(length_penalty);
  size_t best = 0;
  float best_score = 0.0f;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const float len = static_cast<float>(candidates[i].tokens.size() + prompt.forced.size());
    const float score = candidates[i].sum / std::pow(len, penalty);
    if (i == 0 || score > best_score) {
      best = i;
      best_score = score;
    }
  }
  return finish_result(prompt, std::move(candidates[best].tokens), candidates[best].sum, length_penalty);
}

// Greedy decoding after the prompt until <|endoftext|> or `max_new_tokens` free tokens. Searches only append to
// the prompt's cache rows beyond the prompt, so a PromptState can be decoded from any number of times.
WindowResult decode_greedy(const model::WhisperModel& model, const model::CrossKV& cross, const PromptState& prompt,
                           const FilterConfig& filters, const tokenizer::SpecialTokens& sp, int max_new_tokens);

// Decodes greedily after `prompt` (which holds <|startoftranscript|> at `sot_index`) until <|endoftext|>
// or `max_new_tokens` steps.
WindowResult decode_greedy(const model::WhisperModel& model, const model::CrossKV& cross, std::span<const int> prompt,
                           size_t sot_index, const FilterConfig& filters, const tokenizer::SpecialTokens& sp,
                           int max_new_tokens);

// Language probabilities from the logits after <|startoftranscript|>, restricted to the language
// tokens and renormalised; sorted from most to least likely. Pairs of (token id, probability).
std::vector<std::pair<int, double>> detect_language(const model::WhisperModel& model, const model::CrossKV& cross,
                                                    const tokenizer::SpecialTokens& sp,
                                                    const std::vector<int>& lang_ids);

}  // namespace wisp::decoding
