// The decoding layer without the pipeline: the temperature-fallback rules (faster-whisper's
// generate_with_fallback) on scripted results, the sampler and its seeded generator, the forced-prefix
// timestamp rule, and, with an installed model, batched decoding against single-sequence decoding, beam
// search of one beam against greedy decoding, and seeded best-of sampling.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include "decoding/beam_search.h"
#include "decoding/fallback.h"
#include "decoding/greedy.h"
#include "decoding/sampling.h"
#include "model/whisper.h"
#include "ops/ops.h"
#include "support/npy.h"
#include "support/test_paths.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocabulary.h"
#include "wisp/errors.h"

namespace {

using wisp::decoding::FallbackRules;
using wisp::decoding::WindowResult;

WindowResult result(double avg_logprob, double no_speech_prob = 0.0, std::vector<int> tokens = {1}) {
  WindowResult r;
  r.avg_logprob = avg_logprob;
  r.no_speech_prob = no_speech_prob;
  r.tokens = std::move(tokens);
  return r;
}

// A decode function that returns scripted results per temperature and counts its calls.
struct Script {
  std::map<double, WindowResult> results;
  std::map<double, double> ratios;  // compression ratio of each temperature's result
  std::vector<double> calls;
  std::function<WindowResult(double)> decode() {
    return [this](double t) {
      calls.push_back(t);
      WindowResult r = results.at(t);
      r.score = t;  // remembers which temperature produced it
      return r;
    };
  }
  std::function<double(const WindowResult&)> ratio() {
    return [this](const WindowResult& r) { return ratios.at(r.score); };
  }
};

const std::vector<double> kTemps{0.0, 0.2, 0.4, 0.6, 0.8, 1.0};

TEST(Fallback, FirstTemperatureThatPassesIsKept) {
  Script s;
  for (double t : kTemps) {
    s.results[t] = result(-0.3);
    s.ratios[t] = 1.5;
  }
  FallbackRules rules;
  rules.temperatures = kTemps;
  const auto f = wisp::decoding::generate_with_fallback(rules, s.decode(), s.ratio());
  EXPECT_EQ(s.calls, std::vector<double>{0.0});
  EXPECT_EQ(f.temperature, 0.0);
  EXPECT_EQ(f.attempts, 1);
  EXPECT_DOUBLE_EQ(f.compression_ratio, 1.5);
}

TEST(Fallback, RepetitiveOrImprobableResultsMoveToTheNextTemperature) {
  Script s;
  for (double t : kTemps) {
    s.results[t] = result(-0.3);
    s.ratios[t] = 1.5;
  }
  s.ratios[0.0] = 3.0;            // too repetitive
  s.results[0.2] = result(-1.5);  // too improbable
  FallbackRules rules;
  rules.temperatures = kTemps;
  const auto f = wisp::decoding::generate_with_fallback(rules, s.decode(), s.ratio());
  EXPECT_EQ(s.calls, (std::vector<double>{0.0, 0.2, 0.4}));
  EXPECT_DOUBLE_EQ(f.temperature, 0.4);
  EXPECT_EQ(f.attempts, 3);
}

TEST(Fallback, SilenceDoesNotFallBack) {
  Script s;
  for (double t : kTemps) {
    s.results[t] = result(-2.0, 0.9);  // improbable, but P(no speech) 0.9 > 0.6: silence
    s.ratios[t] = 1.0;
  }
  FallbackRules rules;
  rules.temperatures = kTemps;
  auto f = wisp::decoding::generate_with_fallback(rules, s.decode(), s.ratio());
  EXPECT_EQ(s.calls.size(), 1u);
  // A repetitive silent result does not fall back either (the silence rule overrides both).
  s.calls.clear();
  s.ratios[0.0] = 5.0;
  f = wisp::decoding::generate_with_fallback(rules, s.decode(), s.ratio());
  EXPECT_EQ(s.calls.size(), 1u);
  // Without a no-speech threshold the same result falls back.
  s.calls.clear();
  rules.no_speech_threshold.reset();
  f = wisp::decoding::generate_with_fallback(rules, s.decode(), s.ratio());
  EXPECT_EQ(s.calls.size(), kTemps.size());
}

TEST(Fallback, AllFailedPicksTheMostProbableUnderTheCompressionThreshold) {
  Script s;
  const std::vector<double> avg{-1.1, -1.9, -1.05, -1.3, -1.2, -1.01};
  const std::vector<double> ratio{1.0, 1.0, 2.5, 1.0, 1.0, 2.6};  // 0.4 and 1.0 are too repetitive
  for (size_t i = 0; i < kTemps.size(); ++i) {
    s.results[kTemps[i]] = result(avg[i]);
    s.ratios[kTemps[i]] = ratio[i];
  }
  FallbackRules rules;
  rules.temperatures = kTemps;
  auto f = wisp::decoding::generate_with_fallback(rules, s.decode(), s.ratio());
  EXPECT_EQ(s.calls.size(), kTemps.size());
  EXPECT_DOUBLE_EQ(f.result.avg_logprob, -1.1);  // best of 0.0, 0.2, 0.6, 0.8
  EXPECT_DOUBLE_EQ(f.temperature, 1.0);          // the last temperature, for prompt_reset_on_temperature
  EXPECT_DOUBLE_EQ(f.compression_ratio, 1.0);
  // All too repetitive: the best of all.
  for (double t : kTemps) s.ratios[t] = 9.0;
  f = wisp::decoding::generate_with_fallback(rules, s.decode(), s.ratio());
  EXPECT_DOUBLE_EQ(f.result.avg_logprob, -1.01);
  // No compression threshold: the best of all as well.
  rules.compression_ratio_threshold.reset();
  for (double t : kTemps) s.ratios[t] = 1.0;
  f = wisp::decoding::generate_with_fallback(rules, s.decode(), s.ratio());
  EXPECT_DOUBLE_EQ(f.result.avg_logprob, -1.01);
}

TEST(Fallback, DisabledThresholdsNeverFallBack) {
  Script s;
  for (double t : kTemps) {
    s.results[t] = result(-5.0);
    s.ratios[t] = 10.0;
  }
  FallbackRules rules;
  rules.temperatures = kTemps;
  rules.compression_ratio_threshold.reset();
  rules.logprob_threshold.reset();
  const auto f = wisp::decoding::generate_with_fallback(rules, s.decode(), s.ratio());
  EXPECT_EQ(s.calls.size(), 1u);
  EXPECT_EQ(f.temperature, 0.0);
}

TEST(Sampler, SeededStreamIsReproducible) {
  wisp::decoding::Rng a(7), b(7), c(8);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const double x = a.uniform();
    EXPECT_EQ(x, b.uniform());
    EXPECT_GE(x, 0.0);
    EXPECT_LT(x, 1.0);
    differs |= x != c.uniform();
  }
  EXPECT_TRUE(differs);
}

TEST(Sampler, FollowsTheTemperedDistributionAndNeverPicksDisabledTokens) {
  const float ninf = -std::numeric_limits<float>::infinity();
  // log-probabilities of 4 tokens: 0.5, 0.3, 0.2 and a disabled one
  const std::vector<float> lp{std::log(0.5f), std::log(0.3f), ninf, std::log(0.2f)};
  wisp::decoding::Rng rng(1);
  std::vector<int> counts(4, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[static_cast<size_t>(wisp::decoding::sample_token(lp, 1.0, rng))];
  EXPECT_EQ(counts[2], 0);
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(counts[3] / double(n), 0.2, 0.02);
  // At a very low temperature it is the argmax; at 2.0 the distribution flattens: p ∝ sqrt(p).
  for (int i = 0; i < 100; ++i) EXPECT_EQ(wisp::decoding::sample_token(lp, 1e-3, rng), 0);
  std::fill(counts.begin(), counts.end(), 0);
  for (int i = 0; i < n; ++i) ++counts[static_cast<size_t>(wisp::decoding::sample_token(lp, 2.0, rng))];
  const double z = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.2);
  EXPECT_NEAR(counts[0] / double(n), std::sqrt(0.5) / z, 0.02);
  EXPECT_NEAR(counts[3] / double(n), std::sqrt(0.2) / z, 0.02);
}

// Special tokens of a 20-token vocabulary: text 0-9, <|endoftext|> 10, <|notimestamps|> 12, timestamps 13-19.
wisp::tokenizer::SpecialTokens twenty_token_vocabulary() {
  wisp::tokenizer::SpecialTokens sp;
  sp.eot = 10;
  sp.no_timestamps = 12;
  sp.timestamp_begin = 13;
  return sp;
}

TEST(LogitFilters, ForcedPrefixLeavesTheFirstFreeTokenUnconstrainedByTimestampRules) {
  const wisp::tokenizer::SpecialTokens sp = twenty_token_vocabulary();
  wisp::decoding::FilterConfig cfg;
  cfg.max_initial_timestamp_index = 2;
  std::vector<float> logits(20, 0.0f);
  logits[3] = 5.0f;  // a text token the model prefers
  wisp::decoding::apply_filters(logits, {}, cfg, sp);
  for (int i = 0; i < 13; ++i) EXPECT_TRUE(std::isinf(logits[static_cast<size_t>(i)])) << i;  // text forbidden
  for (int i = 13; i <= 15; ++i) EXPECT_FALSE(std::isinf(logits[static_cast<size_t>(i)])) << i;
  for (int i = 16; i < 20; ++i) EXPECT_TRUE(std::isinf(logits[static_cast<size_t>(i)])) << i;  // > 0.04 s

  cfg.initial_timestamp = false;  // after a forced prefix: only <|notimestamps|> is removed
  std::fill(logits.begin(), logits.end(), 0.0f);
  logits[3] = 5.0f;
  wisp::decoding::apply_filters(logits, {}, cfg, sp);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(std::isinf(logits[static_cast<size_t>(i)]), i == 12) << i;
}

// The token rules as data (what a device backend receives) and the host choice over them.
TEST(TokenChoice, RulesAsRangesAndTheChoiceAfterThem) {
  const wisp::tokenizer::SpecialTokens sp = twenty_token_vocabulary();
  wisp::decoding::FilterConfig cfg;
  cfg.suppress = {5, 3, 4, 4};
  cfg.suppress_begin = {11};
  // neighbouring suppressed ids merge into one range; the timestamp test is left to the choice
  const wisp::model::TokenRules later = wisp::decoding::token_rules(std::vector<int>{2, 14}, cfg, sp);
  const std::vector<std::pair<int, int>> want{{3, 6}, {12, 13}, {0, 10}, {13, 14}};
  EXPECT_EQ(later.forbidden, want);
  EXPECT_EQ(later.timestamp_begin, 13);
  cfg.timestamps = false;
  EXPECT_EQ(wisp::decoding::token_rules({}, cfg, sp).timestamp_begin, -1);

  const float ninf = -std::numeric_limits<float>::infinity();
  std::vector<float> logits{1, 3, 3, 0, 2, 3, 0.5f};
  wisp::model::TokenQuery q;
  q.top = 4;
  q.rules.forbidden = {{2, 3}};
  std::vector<float> row = logits;
  const wisp::model::TokenChoice c = wisp::model::choose_tokens(row, q);
  EXPECT_EQ(c.ids, (std::vector<int>{1, 5, 4, 0}));  // equal logits: the lower id first
  EXPECT_NEAR(c.logprobs[0], row[1], 0.0f);
  EXPECT_FLOAT_EQ(std::exp(c.logprobs[0]) * 2 + std::exp(c.logprobs[2]) + std::exp(c.logprobs[3]) + std::exp(row[3]) +
                      std::exp(row[6]),
                  1.0f);
  // more tokens asked for than remain: the forbidden ones follow by id at −inf
  q.rules.forbidden = {{0, 5}, {6, 7}};
  row = logits;
  const wisp::model::TokenChoice d = wisp::model::choose_tokens(row, q);
  EXPECT_EQ(d.ids, (std::vector<int>{5, 0, 1, 2}));
  EXPECT_EQ(d.logprobs[0], 0.0f);
  EXPECT_EQ(d.logprobs[1], ninf);
  // sampling: the same walk as sample_token with the same draw
  q = {};
  q.temperature = 0.7;
  for (double u : {0.0, 0.3, 0.6, 0.99}) {
    q.uniform = u;
    row = logits;
    const int id = wisp::model::choose_tokens(row, q).ids[0];
    EXPECT_EQ(id, wisp::model::sample_from_logprobs(row, 0.7, u)) << u;
  }
  q.rules.forbidden = {{0, 100}};
  row = logits;
  EXPECT_THROW(wisp::model::choose_tokens(row, q), wisp::InternalError);
}

// ---- with a model ----

struct Window {
  std::shared_ptr<const wisp::model::WhisperModel> net;
  std::unique_ptr<wisp::tokenizer::Tokenizer> tok;
  wisp::model::CrossKV cross;
  std::vector<int> prompt;
  wisp::decoding::FilterConfig filters;
};

// tiny.en on the first window of the JFK clip (the reference's log-mel from the golden fixtures).
Window* jfk_window() {
  static std::unique_ptr<Window> w;
  if (w) return w.get();
  const std::string model = wisp::test::models_dir() + "/tiny.en.wisp";
  const std::string mel = wisp::test::fixtures_dir() + "/model/tiny.en/mel.npy";
  if (!wisp::test::exists(model) || !wisp::test::exists(mel)) return nullptr;
  wisp::ops::set_num_threads(2);
  w = std::make_unique<Window>();
  w->net = wisp::model::WhisperModel::load(model);
  w->tok = std::make_unique<wisp::tokenizer::Tokenizer>(w->net->vocabulary(),
                                                        wisp::tokenizer::find_special_tokens(w->net->vocabulary()));
  const std::vector<float> values = wisp::test::read_npy(mel).as<float>();
  wisp::core::Tensor m = wisp::core::Tensor::empty({80, 3000}, wisp::core::DType::kF32);
  std::memcpy(m.data<float>(), values.data(), values.size() * sizeof(float));
  w->cross = w->net->cross_kv(w->net->encode(m));
  const auto& sp = w->tok->special();
  w->prompt = {sp.sot};
  w->filters.suppress = w->net->metadata().suppress_tokens;
  w->filters.suppress_begin = w->net->metadata().suppress_tokens_begin;
  return w.get();
}

#define REQUIRE_WINDOW(w)   \
  Window* w = jfk_window(); \
  if (!w) GTEST_SKIP() << "needs models/tiny.en.wisp and tests/fixtures/model/tiny.en/mel.npy"

TEST(BatchDecode, EachSequenceMatchesDecodingItAlone) {
  REQUIRE_WINDOW(w);
  const auto& net = *w->net;
  const std::vector<int> prompt{w->tok->special().sot, 50363, 843};  // <|sot|> <|0.00|> " And"
  auto single_prompt = net.new_cache();
  net.decode(prompt, w->cross, single_prompt);
  // Three sequences continue with different tokens, then get reordered (1 ← 2, 2 ← 0) and go on.
  auto batch = net.new_batch_cache(3);
  wisp::model::broadcast_cache(single_prompt, batch, 3);
  const std::vector<std::vector<int>> steps{{523, 11, 290}, {616, 262, 314}};
  const auto h1 = net.decode_batch(steps[0], w->cross, batch);
  const std::vector<int> origins{0, 2, 0};
  wisp::model::reorder_cache(batch, origins);
  const auto h2 = net.decode_batch(steps[1], w->cross, batch);
  ASSERT_EQ(h2.dim(0), 3);
  const int64_t d = h2.dim(1);
  for (int b = 0; b < 3; ++b) {
    std::vector<int> seq = prompt;
    seq.push_back(steps[0][static_cast<size_t>(origins[static_cast<size_t>(b)])]);
    seq.push_back(steps[1][static_cast<size_t>(b)]);
    auto cache = net.new_cache();
    net.decode(std::span<const int>(seq).first(prompt.size()), w->cross, cache);
    const auto a1 = net.decode(std::span<const int>(seq).subspan(prompt.size(), 1), w->cross, cache);
    const auto a2 = net.decode(std::span<const int>(seq).subspan(prompt.size() + 1, 1), w->cross, cache);
    EXPECT_EQ(std::memcmp(a1.data<float>(), h1.data<float>() + origins[static_cast<size_t>(b)] * d, d * 4), 0);
    EXPECT_EQ(std::memcmp(a2.data<float>(), h2.data<float>() + b * d, d * 4), 0) << "sequence " << b;
  }
  // Dropping sequences shrinks the batch.
  const std::vector<int> keep{2};
  wisp::model::reorder_cache(batch, keep);
  EXPECT_EQ(batch.batch, 1);
  EXPECT_THROW(net.decode_batch(steps[0], w->cross, batch), wisp::InvalidArgument);
}

TEST(BeamSearch, OneBeamIsGreedy) {
  REQUIRE_WINDOW(w);
  const auto& sp = w->tok->special();
  const auto ps = wisp::decoding::run_prompt(*w->net, w->cross, w->prompt, 0, sp);
  const auto greedy = wisp::decoding::decode_greedy(*w->net, w->cross, ps, w->filters, sp, 224);
  wisp::decoding::BeamOptions bo;
  bo.beam_size = 1;
  const auto beam = wisp::decoding::decode_beam(*w->net, w->cross, ps, w->filters, sp, 224, bo);
  EXPECT_EQ(beam.tokens, greedy.tokens);
  EXPECT_NEAR(beam.avg_logprob, greedy.avg_logprob, 1e-5);
  EXPECT_EQ(beam.no_speech_prob, greedy.no_speech_prob);
  // The prompt state is reusable: decoding again gives the same result.
  EXPECT_EQ(wisp::decoding::decode_greedy(*w->net, w->cross, ps, w->filters, sp, 224).tokens, greedy.tokens);
}

TEST(BeamSearch, FiveBeamsScoreAtLeastAsWellAsGreedyAndRespectTheLengthLimit) {
  REQUIRE_WINDOW(w);
  const auto& sp = w->tok->special();
  const auto ps = wisp::decoding::run_prompt(*w->net, w->cross, w->prompt, 0, sp);
  const auto greedy = wisp::decoding::decode_greedy(*w->net, w->cross, ps, w->filters, sp, 224);
  const auto beam = wisp::decoding::decode_beam(*w->net, w->cross, ps, w->filters, sp, 224, {});
  EXPECT_GE(beam.score, greedy.score - 1e-4);
  EXPECT_GE(beam.tokens.front(), sp.timestamp_begin);  // the timestamp rules hold per beam
  const auto short_beam = wisp::decoding::decode_beam(*w->net, w->cross, ps, w->filters, sp, 5, {});
  EXPECT_LE(short_beam.tokens.size(), 5u);
}

TEST(Sampling, SeededBestOfIsReproducibleAndColdSamplingIsGreedy) {
  REQUIRE_WINDOW(w);
  const auto& sp = w->tok->special();
  const auto ps = wisp::decoding::run_prompt(*w->net, w->cross, w->prompt, 0, sp);
  wisp::decoding::SamplingOptions so;
  so.temperature = 1.0;
  so.best_of = 5;
  wisp::decoding::Rng r1(42), r2(42);
  const auto a = wisp::decoding::decode_sampling(*w->net, w->cross, ps, w->filters, sp, 224, so, r1);
  const auto b = wisp::decoding::decode_sampling(*w->net, w->cross, ps, w->filters, sp, 224, so, r2);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.avg_logprob, b.avg_logprob);
  EXPECT_GE(a.tokens.front(), sp.timestamp_begin);
  so.temperature = 1e-4;  // effectively the argmax at every step
  wisp::decoding::Rng r3(1);
  const auto cold = wisp::decoding::decode_sampling(*w->net, w->cross, ps, w->filters, sp, 224, so, r3);
  const auto greedy = wisp::decoding::decode_greedy(*w->net, w->cross, ps, w->filters, sp, 224);
  EXPECT_EQ(cold.tokens, greedy.tokens);
}

}  // namespace
