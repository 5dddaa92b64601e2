// The CPU linear layers of a decode step (src/kernels/cpu/linear.cpp): fp16, int8 and int4 (group 64) weights
// against 1 row (greedy) and 5 rows (5 beams), at the decoder shapes of tiny (d 384), base (d 512) and large
// (d 1280): the fused QKV projection [3d, d], fc1 [4d, d], fc2 [d, 4d], and the logits [51865, d] (fp16, as the
// engine stores the token embedding). Counters: weight bytes read per second and multiply-adds per second.
// A decode step streams every layer's weights from memory (a step of tiny.en reads ~60 MB, large ~1.6 GB), so
// the iterations rotate over copies of the weight adding up to more than kStreamBytes: no copy is still in the
// last-level cache when it is read again. Threads: OpenMP's (OMP_NUM_THREADS). On a shared machine set
// OMP_WAIT_POLICY=passive.
//   build/bench/linear_bench [--benchmark_format=json] [--benchmark_filter=REGEX]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/quantize.h"

namespace {

namespace cpu = wisp::kernels::cpu;

enum Type : int64_t { kF16, kI8, kI4 };
enum Layer : int64_t { kQkv, kFc1, kFc2, kLogits };

constexpr int64_t kVocab = 51865;
constexpr int64_t kGroup = 64;
// Bytes of weight copies the iterations rotate over: well past a server CPU's last-level cache.
constexpr int64_t kStreamBytes = int64_t{256} << 20;

// [n, k] of a layer at model width d.
void layer_shape(Layer layer, int64_t d, int64_t& n, int64_t& k) {
  switch (layer) {
    case kQkv:
      n = 3 * d, k = d;
      return;
    case kFc1:
      n = 4 * d, k = d;
      return;
    case kFc2:
      n = d, k = 4 * d;
      return;
    case kLogits:
      n = kVocab, k = d;
      return;
  }
}

// args: type, layer, d, m
void BM_Linear(benchmark::State& state) {
  const auto type = static_cast<Type>(state.range(0));
  const auto layer = static_cast<Layer>(state.range(1));
  const int64_t d = state.range(2), m = state.range(3);
  int64_t n = 0, k = 0;
  layer_shape(layer, d, n, k);

  std::mt19937 rng(static_cast<unsigned>(n * 131 + k));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(n * k)), x(static_cast<size_t>(m * k)), bias(static_cast<size_t>(n));
  for (float& v : w) v = 0.05f * u(rng);
  for (float& v : x) v = u(rng);
  for (float& v : bias) v = u(rng);
  std::vector<float> y(static_cast<size_t>(m * n));

  std::vector<uint16_t> w16;
  std::vector<int8_t> q8;
  std::vector<uint8_t> q4;
  std::vector<float> scale;
  int64_t weight_bytes = 0;
  if (type == kF16) {
    w16.resize(w.size());
    for (size_t i = 0; i < w.size(); ++i) w16[i] = wisp::core::float_to_half(w[i]);
    weight_bytes = 2 * n * k;
  } else if (type == kI8) {
    q8.resize(w.size());
    scale.resize(static_cast<size_t>(n));
    cpu::quantize_i8(w.data(), q8.data(), scale.data(), n, k);
    weight_bytes = n * k + 4 * n;
  } else {
    q4.resize(w.size() / 2);
    scale.resize(static_cast<size_t>(n * (k / kGroup)));
    cpu::quantize_i4(w.data(), q4.data(), scale.data(), n, k, kGroup);
    weight_bytes = n * k / 2 + 4 * n * (k / kGroup);
  }
  // The copies the iterations rotate over (the first is the one made above).
  const int64_t copies = (kStreamBytes + weight_bytes - 1) / weight_bytes;
  const auto replicate = [copies](auto& v) {
    const size_t one = v.size();
    v.resize(one * static_cast<size_t>(copies));
    for (int64_t c = 1; c < copies; ++c) std::copy_n(v.begin(), one, v.begin() + static_cast<std::ptrdiff_t>(c * one));
    return one;
  };
  const size_t w16_one = replicate(w16), q8_one = replicate(q8), q4_one = replicate(q4), scale_one = replicate(scale);

  int64_t copy = 0;
  for (auto _ : state) {
    const auto c = static_cast<size_t>(copy);
    copy = (copy + 1) % copies;
    if (type == kF16) {
      cpu::linear_f16w(x.data(), w16.data() + c * w16_one, bias.data(), y.data(), m, n, k);
    } else if (type == kI8) {
      cpu::linear_i8w(x.data(), q8.data() + c * q8_one, scale.data() + c * scale_one, bias.data(), y.data(), m, n, k);
    } else {
      cpu::linear_i4w(x.data(), q4.data() + c * q4_one, scale.data() + c * scale_one, bias.data(), y.data(), m, n, k,
                      kGroup);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const auto iterations = static_cast<double>(state.iterations());
  state.counters["weight_GB/s"] =
      benchmark::Counter(iterations * static_cast<double>(weight_bytes) / 1e9, benchmark::Counter::kIsRate);
  state.counters["GMAC/s"] =
      benchmark::Counter(iterations * static_cast<double>(m * n * k) / 1e9, benchmark::Counter::kIsRate);
  static const char* const kTypes[] = {"f16", "i8", "i4g64"};
  static const char* const kLayers[] = {"qkv", "fc1", "fc2", "logits"};
  state.SetLabel(std::string(kTypes[type]) + " " + kLayers[layer] + " d" + std::to_string(d) + " m" +
                 std::to_string(m) + " (" + std::to_string(n) + "x" + std::to_string(k) + ")");
}

void decode_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t d : {384, 512, 1280}) {
    for (int64_t m : {1, 5}) {
      for (int64_t type : {kF16, kI8, kI4}) {
        for (int64_t layer : {kQkv, kFc1, kFc2}) b->Args({type, layer, d, m});
      }
      b->Args({kF16, kLogits, d, m});
    }
  }
}

BENCHMARK(BM_Linear)->Apply(decode_shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
