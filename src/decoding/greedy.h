// Greedy decoding of one 30 s window and language detection, as the reference does them.
#pragma once

#include <span>
#include <string>
#include <utility>
#include <vector>

#include "decoding/logit_filters.h"
#include "model/whisper.h"
#include "tokenizer/tokenizer.h"

namespace wisp::decoding {

struct WindowResult {
  std::vector<int> tokens;     // sampled tokens without the final <|endoftext|>
  double sum_logprob = 0.0;    // over the sampled tokens and the end token
  double avg_logprob = 0.0;    // sum_logprob / (tokens + 1), as the reference reports it
  double no_speech_prob = 0.0; // P(<|nospeech|>) at the <|startoftranscript|> position
};

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
