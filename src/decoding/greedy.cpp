#include "decoding/greedy.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/ops.h"
#include "wisp/errors.h"

namespace wisp::decoding {

using core::Tensor;

namespace {

// Two rows of `hidden` [n, d] into one [2, d] tensor, so both logits rows come from one projection.
Tensor pick_rows(const Tensor& hidden, size_t a, size_t b) {
  const int64_t d = hidden.dim(1);
  Tensor out = Tensor::empty({2, d}, core::DType::kF32);
  std::memcpy(out.data<float>(), hidden.data<float>() + a * d, static_cast<size_t>(d) * 4);
  std::memcpy(out.data<float>() + d, hidden.data<float>() + b * d, static_cast<size_t>(d) * 4);
  return out;
}

double softmax_prob(std::span<const float> logits, int id) {
  float mx = -INFINITY;
  for (float x : logits) mx = std::max(mx, x);
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x - mx));
  return std::exp(static_cast<double>(logits[static_cast<size_t>(id)] - mx)) / sum;
}

}  // namespace

WindowResult decode_greedy(const model::WhisperModel& model, const model::CrossKV& cross, std::span<const int> prompt,
                           size_t sot_index, const FilterConfig& filters, const tokenizer::SpecialTokens& sp,
                           int max_new_tokens) {
  if (prompt.empty() || sot_index >= prompt.size() || prompt[sot_index] != sp.sot) {
    throw InternalError("decode_greedy: prompt without <|startoftranscript|> at the given index");
  }
  const int n_vocab = model.dims().n_vocab;
  model::KVCache cache = model.new_cache();
  const Tensor hidden = model.decode(prompt, cross, cache);
  const Tensor first = model.logits(pick_rows(hidden, sot_index, prompt.size() - 1));  // [2, n_vocab]

  WindowResult r;
  r.no_speech_prob =
      sp.no_speech >= 0 ? softmax_prob({first.data<float>(), static_cast<size_t>(n_vocab)}, sp.no_speech) : 0.0;

  std::vector<float> row(first.data<float>() + n_vocab, first.data<float>() + 2 * n_vocab);
  for (int step = 0; step < max_new_tokens; ++step) {
    apply_filters(row, r.tokens, filters, sp);
    ops::log_softmax_(row);
    const int tok = static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
    r.sum_logprob += row[static_cast<size_t>(tok)];
    if (tok == sp.eot) break;
    r.tokens.push_back(tok);
    if (step + 1 == max_new_tokens) break;
    const int next[1] = {tok};
    const Tensor h = model.decode(next, cross, cache);
    const Tensor l = model.logits(h);
    std::memcpy(row.data(), l.data<float>(), static_cast<size_t>(n_vocab) * 4);
  }
  r.avg_logprob = r.sum_logprob / static_cast<double>(r.tokens.size() + 1);
  return r;
}

std::vector<std::pair<int, double>> detect_language(const model::WhisperModel& model, const model::CrossKV& cross,
                                                    const tokenizer::SpecialTokens& sp,
                                                    const std::vector<int>& lang_ids) {
  if (lang_ids.empty()) throw InvalidArgument("language detection needs a multilingual model");
  model::KVCache cache = model.new_cache();
  const int sot[1] = {sp.sot};
  const Tensor logits = model.logits(model.decode(sot, cross, cache));  // [1, n_vocab]
  const float* l = logits.data<float>();
  float mx = -INFINITY;
  for (int id : lang_ids) mx = std::max(mx, l[id]);
  double sum = 0.0;
  for (int id : lang_ids) sum += std::exp(static_cast<double>(l[id] - mx));
  std::vector<std::pair<int, double>> probs;
  for (int id : lang_ids) probs.emplace_back(id, std::exp(static_cast<double>(l[id] - mx)) / sum);
  std::stable_sort(probs.begin(), probs.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return probs;
}

}  // namespace wisp::decoding
