// The host side of one decode step over Whisper's 51865-token vocabulary, which runs on the CPU for every
// sequence and step whatever device runs the network: the logit rules (apply_filters, with the timestamp
// grammar), the log-softmax and the greedy choice. On the GPU backend this is on each step's critical path
// (a tiny.en step's network takes ~0.2 ms there). `Scalar` rows time the loops this code had before they were
// vectorised (ops::log_softmax_, max_value, log_sum_exp, argmax), on the same rows, for the ratio;
// `DeviceQuery` is what remains on the host when the GPU backend chooses the tokens itself.
//   build/bench/decode_host_bench [--benchmark_format=json]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "decoding/logit_filters.h"
#include "ops/ops.h"

namespace {

using wisp::decoding::FilterConfig;
using wisp::tokenizer::SpecialTokens;

constexpr int kVocab = 51865;  // multilingual Whisper

SpecialTokens whisper_tokens() {
  SpecialTokens sp;
  sp.eot = 50257;
  sp.sot = 50258;
  sp.no_timestamps = 50363;
  sp.timestamp_begin = 50364;
  return sp;
}

// Logits as a decoder emits them (a few large values in a broad spread), seeded.
std::vector<float> logits_row(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> row(kVocab);
  for (float& x : row) x = d(rng);
  return row;
}

// Mid-window history: a timestamp, some text (so the timestamp rules do their full work).
const std::vector<int> kSampled = {50364, 440, 2068, 1065, 264, 5165, 13};

void scalar_log_softmax(std::span<float> x) {
  float mx = -std::numeric_limits<float>::infinity();
  for (float v : x) mx = std::max(mx, v);
  double sum = 0.0;
  for (float v : x) sum += std::exp(static_cast<double>(v - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  for (float& v : x) v -= lse;
}

// One greedy step's host work: copy the logits in, the rules, log-softmax, argmax.
void BM_GreedyStep(benchmark::State& state) {
  const SpecialTokens sp = whisper_tokens();
  const FilterConfig cfg;
  const std::vector<float> src = logits_row(1);
  std::vector<float> row(kVocab);
  for (auto _ : state) {
    std::memcpy(row.data(), src.data(), sizeof(float) * kVocab);
    wisp::decoding::apply_filters(row, kSampled, cfg, sp);
    wisp::ops::log_softmax_(row);
    benchmark::DoNotOptimize(wisp::ops::argmax(row));
  }
}
BENCHMARK(BM_GreedyStep)->Unit(benchmark::kMicrosecond);

// The same logits row through `log_softmax` every iteration (the copy back in is part of the step).
void run_log_softmax(benchmark::State& state, void (*log_softmax)(std::span<float>)) {
  const std::vector<float> src = logits_row(2);
  std::vector<float> row(kVocab);
  for (auto _ : state) {
    std::memcpy(row.data(), src.data(), sizeof(float) * kVocab);
    log_softmax(row);
    benchmark::DoNotOptimize(row.data());
  }
}
void BM_LogSoftmax(benchmark::State& state) { run_log_softmax(state, wisp::ops::log_softmax_); }
BENCHMARK(BM_LogSoftmax)->Unit(benchmark::kMicrosecond);
void BM_LogSoftmaxScalar(benchmark::State& state) { run_log_softmax(state, scalar_log_softmax); }
BENCHMARK(BM_LogSoftmaxScalar)->Unit(benchmark::kMicrosecond);

// A beam's host work per step when the device applies the rules and chooses (GpuNetwork with
// device_token_choice): the rules as data for the row's history, with the reference's default suppression
// list (~90 ids), and the query around them; no logits on the host.
void BM_DeviceQuery(benchmark::State& state) {
  const SpecialTokens sp = whisper_tokens();
  FilterConfig cfg;
  for (int id = 1; id < 360; id += 4) cfg.suppress.push_back(id);  // as many ids as the default list
  cfg.suppress_begin = {220, sp.eot};
  for (auto _ : state) {
    wisp::model::TokenQuery q;
    q.rules = wisp::decoding::token_rules(kSampled, cfg, sp);
    q.top = 10;
    benchmark::DoNotOptimize(q.rules.forbidden.data());
  }
}
BENCHMARK(BM_DeviceQuery)->Unit(benchmark::kMicrosecond);

void BM_ArgmaxAndMax(benchmark::State& state) {
  const std::vector<float> row = logits_row(3);
  for (auto _ : state) {
    benchmark::DoNotOptimize(wisp::ops::argmax(row));
    benchmark::DoNotOptimize(wisp::ops::max_value(std::span<const float>(row).first(50364)));
  }
}
BENCHMARK(BM_ArgmaxAndMax)->Unit(benchmark::kMicrosecond);

void BM_ArgmaxAndMaxScalar(benchmark::State& state) {
  const std::vector<float> row = logits_row(3);
  for (auto _ : state) {
    benchmark::DoNotOptimize(std::max_element(row.begin(), row.end()) - row.begin());
    float mx = -std::numeric_limits<float>::infinity();
    for (int i = 0; i < 50364; ++i) mx = std::max(mx, row[static_cast<size_t>(i)]);
    benchmark::DoNotOptimize(mx);
  }
}
BENCHMARK(BM_ArgmaxAndMaxScalar)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
