#include "decoding/greedy.h"

#include <algorithm>
#include <cmath>

#include "wisp/errors.h"

namespace wisp::decoding {

using core::Tensor;

namespace {

double softmax_prob(std::span<const float> logits, int id) {
  float mx = -INFINITY;
  for (float x : logits) mx = std::max(mx, x);
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x - mx));
  return std::exp(static_cast<double>(logits[static_cast<size_t>(id)] - mx)) / sum;
}

}  // namespace

PromptState run_prompt(const model::WhisperModel& model, const model::CrossKV& cross, std::span<const int> prompt,
                       size_t sot_index, const tokenizer::SpecialTokens& sp, size_t n_forced) {
  if (prompt.empty() || sot_index >= prompt.size() || prompt[sot_index] != sp.sot) {
    throw InternalError("decode: prompt without <|startoftranscript|> at the given index");
  }
  if (sot_index + n_forced >= prompt.size()) throw InternalError("decode: forced prefix overlaps the SOT sequence");
  const int n_vocab = model.dims().n_vocab;
  PromptState ps;
  ps.cache = model.new_cache();
  const int64_t rows[2] = {static_cast<int64_t>(sot_index), static_cast<int64_t>(prompt.size() - 1)};
  const Tensor first = model.decode_logits(prompt, cross, ps.cache, rows);  // [2, n_vocab]
  ps.no_speech_prob =
      sp.no_speech >= 0 ? softmax_prob({first.data<float>(), static_cast<size_t>(n_vocab)}, sp.no_speech) : 0.0;
  ps.logits.assign(first.data<float>() + n_vocab, first.data<float>() + 2 * n_vocab);
  ps.forced.assign(prompt.end() - static_cast<long>(n_forced), prompt.end());
  return ps;
}

FilterConfig filters_after(const FilterConfig& filters, const PromptState& prompt) {
  FilterConfig f = filters;
  if (!prompt.forced.empty()) f.initial_timestamp = false;
  return f;
}

WindowResult finish_result(const PromptState& prompt, std::vector<int> free_tokens, float sum_logprob,
                           double length_penalty) {
  WindowResult r;
  r.no_speech_prob = prompt.no_speech_prob;
  r.tokens = prompt.forced;
  r.tokens.insert(r.tokens.end(), free_tokens.begin(), free_tokens.end());
  const float len = static_cast<float>(r.tokens.size());
  // The reference's score (f32) and faster-whisper's recovery of the sum from it: score · len^penalty.
  const float score = sum_logprob / std::pow(len, static_cast<float>(length_penalty));
  r.score = score;
  r.sum_logprob = len > 0 ? static_cast<double>(score) * std::pow(static_cast<double>(len), length_penalty)
                          : static_cast<double>(sum_logprob);
  r.avg_logprob = r.sum_logprob / (static_cast<double>(len) + 1.0);
  return r;
}

WindowResult decode_greedy(const model::WhisperModel& model, const model::CrossKV& cross, const PromptState& prompt,
                           const FilterConfig& filters, const tokenizer::SpecialTokens& sp, int max_new_tokens) {
  const FilterConfig f = filters_after(filters, prompt);
  // The copy shares the prompt's storage; decoding writes only rows past the prompt before reading them.
  model::KVCache cache = prompt.cache;
  std::vector<int> tokens;
  double sum = 0.0;
  model::TokenQuery query;
  query.rules = token_rules(tokens, f, sp);
  std::vector<float> first = prompt.logits;
  model::TokenChoice choice = model::choose_tokens(first, query);
  for (int step = 0; step < max_new_tokens; ++step) {
    const int tok = choice.ids[0];
    sum += choice.logprobs[0];
    if (tok == sp.eot) break;
    tokens.push_back(tok);
    if (step + 1 == max_new_tokens) break;
    query.rules = token_rules(tokens, f, sp);
    choice = model.decode_choose(tok, cross, cache, query);
  }
  WindowResult r = finish_result(prompt, std::move(tokens), static_cast<float>(sum), 1.0);
  // Greedy keeps its f64 sum (the ranking score does not matter with one hypothesis).
  r.sum_logprob = sum;
  r.avg_logprob = sum / static_cast<double>(r.tokens.size() + 1);
  return r;
}

WindowResult decode_greedy(const model::WhisperModel& model, const model::CrossKV& cross, std::span<const int> prompt,
                           size_t sot_index, const FilterConfig& filters, const tokenizer::SpecialTokens& sp,
                           int max_new_tokens) {
  return decode_greedy(model, cross, run_prompt(model, cross, prompt, sot_index, sp), filters, sp, max_new_tokens);
}

std::vector<std::pair<int, double>> detect_language(const model::WhisperModel& model, const model::CrossKV& cross,
                                                    const tokenizer::SpecialTokens& sp,
                                                    const std::vector<int>& lang_ids) {
  if (lang_ids.empty()) throw InvalidArgument("language detection needs a multilingual model");
  model::KVCache cache = model.new_cache();
  const int sot[1] = {sp.sot};
  const Tensor logits = model.decode_logits(sot, cross, cache);  // [1, n_vocab]
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
