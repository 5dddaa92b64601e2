#include "decoding/sampling.h"

#include "wisp/errors.h"

namespace wisp::decoding {

int sample_token(std::span<const float> logprobs, double temperature, Rng& rng) {
  return model::sample_from_logprobs(logprobs, temperature, rng.uniform());
}

WindowResult decode_sampling(const model::WhisperModel& model, const model::CrossKV& cross, const PromptState& prompt,
                             const FilterConfig& filters, const tokenizer::SpecialTokens& sp, int max_new_tokens,
                             const SamplingOptions& options, Rng& rng) {
  if (!(options.temperature > 0)) throw InvalidArgument("sampling needs a temperature above 0");
  if (options.best_of < 1) throw InvalidArgument("best_of must be at least 1");
  if (max_new_tokens < 1) throw InvalidArgument("nothing to decode: no room left in the decoder context");
  const int n = options.best_of;

  struct Sequence {
    std::vector<int> tokens;
    float sum = 0.0f;  // float, as the reference accumulates scores
  };
  std::vector<Sequence> seqs(static_cast<size_t>(n));
  std::vector<int> alive(static_cast<size_t>(n));  // batch row → sequence
  for (int i = 0; i < n; ++i) alive[static_cast<size_t>(i)] = i;
  const FilterConfig f = filters_after(filters, prompt);
  // Row r's query: one token drawn at the temperature after the rules of its sequence; the draws are taken
  // in row order, step by step, as sampling each row in turn takes them.
  auto queries_for = [&](const std::vector<int>& rows) {
    std::vector<model::TokenQuery> qs;
    for (int s : rows) {
      model::TokenQuery q;
      q.rules = token_rules(seqs[static_cast<size_t>(s)].tokens, f, sp);
      q.temperature = options.temperature;
      q.uniform = rng.uniform();
      qs.push_back(std::move(q));
    }
    return qs;
  };
  std::vector<model::TokenChoice> choices;  // [alive]
  for (const model::TokenQuery& q : queries_for(alive)) {
    std::vector<float> first = prompt.logits;
    choices.push_back(model::choose_tokens(first, q));
  }
  model::BatchKVCache cache;

  for (int step = 0; step < max_new_tokens && !alive.empty(); ++step) {
    const bool last_step = step + 1 == max_new_tokens;
    std::vector<int> still, origins, inputs;
    for (size_t r = 0; r < alive.size(); ++r) {
      Sequence& s = seqs[static_cast<size_t>(alive[r])];
      const int tok = choices[r].ids[0];
      s.sum += choices[r].logprobs[0];
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
    choices = model.decode_batch_choose(inputs, cross, cache, queries_for(alive));
  }

  return finish_best(prompt, seqs, options.length_penalty);
}

}  // namespace wisp::decoding
