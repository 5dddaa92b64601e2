// Beam search over one window, as CTranslate2's BeamSearch runs it for faster-whisper (num_hypotheses 1):
// 2 × beam_size candidates per step from all beams' cumulative log-probabilities, finished hypotheses
// collected until round(beam_size × patience) of them exist (or the length limit), each scored by
// sum_logprob / length^length_penalty, the best one returned.
#pragma once

#include "decoding/greedy.h"

namespace wisp::decoding {

struct BeamOptions {
  int beam_size = 5;
  double patience = 1.0;        // collect round(beam_size × patience) finished hypotheses before stopping
  double length_penalty = 1.0;  // hypotheses are ranked by sum_logprob / length^length_penalty
};

// The beams are decoded as one batch (WhisperModel::decode_batch); the first step expands the prompt's
// single row, as CTranslate2 does on the CPU. After a forced prefix (PromptState::forced), as CTranslate2,
// an end of text among the secondary candidates of the first free step becomes a dead candidate.
WindowResult decode_beam(const model::WhisperModel& model, const model::CrossKV& cross, const PromptState& prompt,
                         const FilterConfig& filters, const tokenizer::SpecialTokens& sp, int max_new_tokens,
                         const BeamOptions& options);

}  // namespace wisp::decoding
