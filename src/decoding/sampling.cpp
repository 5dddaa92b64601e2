#include "decoding/sampling.h"

#include <algorithm>
#include <cmath>

#include "ops/ops.h"
#include "wisp/errors.h"

namespace wisp::decoding {

using core::Tensor;

int sample_token(std::span<const float> logprobs, double temperature, Rng& rng) {
  float mx = -INFINITY;
  for (float x : logprobs) mx = std::max(mx, x);
  if (mx == -INFINITY) throw InternalError("sampling: every token is disabled");
  const double inv_t = 1.0 / temperature;
  double total = 0.0;
  for (float x : logprobs) {
    if (x != -INFINITY) total += std::exp(static_cast<double>(x - mx) * inv_t);
  }
  const double u = rng.uniform() * total;
  double cum = 0.0;
  int last = -1;
  for (size_t i = 0; i < logprobs.size(); ++i) {
    if (logprobs[i] == -INFINITY) continue;
    cum += std::exp(static_cast<double>(logprobs[i] - mx) * inv_t);
    last = static_cast<int>(i);
    if (cum > u) return last;
  }
  return last;  // u landed on the rounding slack at the very end
}

WindowResult decode_sampling(const model::WhisperModel& model, const model::CrossKV& cross, const PromptState& prompt,
                             const FilterConfig& filters, const tokenizer::SpecialTokens& sp, int max_new_tokens,
                             const SamplingOptions& options, Rng& rng) {
  if (!(options.temperature > 0)) throw InvalidArgument("sampling needs a temperature above 0");
  if (options.best_of < 1) throw InvalidArgument("best_of must be at least 1");
  if (max_new_tokens < 1) throw InvalidArgument("nothing to decode: no room left in the decoder context");
  const int n = options.best_of;
  const int n_vocab = model.dims().n_vocab;

  struct Sequence {
    std::vector<int> tokens;
    float sum = 0.0f;  // float, as the reference accumulates scores
  };
  std::vector<Sequence> seqs(static_cast<size_t>(n));
  std::vector<int> alive(static_cast<size_t>(n));  // batch row → sequence
  for (int i = 0; i < n; ++i) alive[static_cast<size_t>(i)] = i;
  std::vector<float> logits;  // [alive, n_vocab]
  for (int i = 0; i < n; ++i) logits.insert(logits.end(), prompt.logits.begin(), prompt.logits.end());
  model::BatchKVCache cache;
  const FilterConfig f = filters_after(filters, prompt);

  for (int step = 0; step < max_new_tokens && !alive.empty(); ++step) {
    const bool last_step = step + 1 == max_new_tokens;
    std::vector<int> still, origins, inputs;
    for (size_t r = 0; r < alive.size(); ++r) {
      Sequence& s = seqs[static_cast<size_t>(alive[r])];
      std::span<float> row(logits.data() + r * static_cast<size_t>(n_vocab), static_cast<size_t>(n_vocab));
      apply_filters(row, s.tokens, f, sp);
      ops::log_softmax_(row);
      const int tok = sample_token(row, options.temperature, rng);
      s.sum += row[static_cast<size_t>(tok)];
      if (tok == sp.eot) continue;
      s.tokens.push_back(tok);
      if (last_step) continue;
      still.push_back(alive[r]);
      origins.push_back(static_cast<int>(r));
      inputs.push_back(tok);
    }
    alive = std::move(still);
    if (alive.empty()) break;
    if (step == 0) {
      cache = model.new_batch_cache(n);
      model::broadcast_cache(prompt.cache, cache, static_cast<int64_t>(alive.size()));  // identical rows
    } else if (alive.size() != static_cast<size_t>(cache.batch)) {
      model::reorder_cache(cache, origins);
    }
    const Tensor l = model.decode_batch_logits(inputs, cross, cache);  // [alive, n_vocab]
    logits.assign(l.data<float>(), l.data<float>() + alive.size() * static_cast<size_t>(n_vocab));
  }

  return finish_best(prompt, seqs, options.length_penalty);
}

}  // namespace wisp::decoding
