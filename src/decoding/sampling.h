// Best-of-N sampling at a temperature over one window, as CTranslate2 runs it for faster-whisper when the
// temperature is above 0 (beam size 1, num_hypotheses = best_of, sampling from the whole vocabulary):
// N sequences sampled independently, each ranked by sum_logprob / length^length_penalty, the best returned.
#pragma once

#include <cstdint>
#include <random>

#include "decoding/greedy.h"

namespace wisp::decoding {

// A seeded generator with a portable stream: the same seed gives the same samples on every platform and
// standard library (the mt19937_64 sequence is fixed by the standard; the conversion to [0, 1) is ours).
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : gen_(seed) {}
  double uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }  // [0, 1)

 private:
  std::mt19937_64 gen_;
};

struct SamplingOptions {
  double temperature = 1.0;     // > 0: tokens are drawn from softmax(log-probabilities / temperature)
  int best_of = 5;              // sequences sampled; the best-ranked one is returned
  double length_penalty = 1.0;  // ranking: sum_logprob / length^length_penalty
};

// Draws one token from the log-probabilities `logprobs` (disabled tokens at -inf) at `temperature`.
int sample_token(std::span<const float> logprobs, double temperature, Rng& rng);

// The N sequences are decoded as one batch (WhisperModel::decode_batch); finished ones leave the batch.
// Scores are the untempered log-probabilities of the sampled tokens, as the reference reports them.
WindowResult decode_sampling(const model::WhisperModel& model, const model::CrossKV& cross, const PromptState& prompt,
                             const FilterConfig& filters, const tokenizer::SpecialTokens& sp, int max_new_tokens,
                             const SamplingOptions& options, Rng& rng);

}  // namespace wisp::decoding
