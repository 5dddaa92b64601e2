// GpuWhisper's batched decode step (step_groups) against the same rows stepped one at a time, with random
// tiny-size weights: groups of sequences in scattered slots over different windows, in a shuffled order, at
// 8 rows (the GEMV path) and 24 rows (cuBLASLt), for fp16 and int8-dynamic caches. Each row's logits must be
// those of its sequence alone: a row that read another row's cache, window or token would be off by the size
// of the logits themselves, while the two paths' rounding differs by far less (bound below). Skips with "no
// CUDA device" without a GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "runtime/gpu_whisper.h"

namespace wisp::runtime {
namespace {

constexpr int kWindows = 4, kSequences = 24, kPrompt = 3;
// sequence s reads window s / 6
int window_of(int s) { return s / (kSequences / kWindows); }

struct Group {
  int seq, batch;  // sequences [seq, seq + batch), all over window_of(seq)
};

void check_groups(GpuWhisper& gpu, const std::vector<Group>& groups, const std::vector<int>& token,
                  const std::vector<std::vector<float>>& alone, const char* what) {
  const int n_vocab = gpu.dims().n_vocab;
  std::vector<std::vector<float>> logits(groups.size());
  std::vector<std::vector<int>> tokens(groups.size());
  std::vector<GpuWhisper::StepGroup> steps;
  for (size_t g = 0; g < groups.size(); ++g) {
    logits[g].assign(size_t(groups[g].batch) * size_t(n_vocab), NAN);
    for (int b = 0; b < groups[g].batch; ++b) tokens[g].push_back(token[size_t(groups[g].seq + b)]);
    steps.push_back(
        {window_of(groups[g].seq), groups[g].seq, groups[g].batch, kPrompt, tokens[g].data(), logits[g].data()});
  }
  gpu.step_groups(steps.data(), int(steps.size()));
  double worst = 0, scale = 0;
  size_t not_finite = 0;
  std::string row_errors;  // per sequence, in the order of the groups
  for (size_t g = 0; g < groups.size(); ++g) {
    for (int b = 0; b < groups[g].batch; ++b) {
      const std::vector<float>& want = alone[size_t(groups[g].seq + b)];
      double row = 0;
      for (int v = 0; v < n_vocab; ++v) {
        const float got = logits[g][size_t(b) * size_t(n_vocab) + size_t(v)];
        not_finite += !std::isfinite(got);
        row = std::max(row, double(std::fabs(got - want[size_t(v)])));
        scale = std::max(scale, double(std::fabs(want[size_t(v)])));
      }
      worst = std::max(worst, row);
      char buf[48];
      std::snprintf(buf, sizeof buf, " %d:%.2g", groups[g].seq + b, row);
      row_errors += buf;
    }
  }
  // fp16 activations between the layers: the paths' different orders of sums change a logit by a few fp16
  // ulps of the largest; 2 % of the largest logit leaves room for that and none for a wrong row.
  const double bound = 0.02 * scale;
  std::printf("  %-48s max |batched - alone| %.3g (largest logit %.3g, bound %.3g)\n", what, worst, scale, bound);
  EXPECT_EQ(not_finite, 0u) << what;
  EXPECT_LE(worst, bound) << what << "; sequence:error" << row_errors;
}

TEST(GpuWhisperBatch, GroupsMatchSequencesAlone) {
  if (!gpu_available()) GTEST_SKIP() << "no CUDA device";
  const GpuDims dims = dims_for_size("tiny");
  for (GpuKvCache kv : {GpuKvCache::kF16, GpuKvCache::kInt8Dynamic}) {
    auto gpu = GpuWhisper::create_random(dims, kSequences, 7, GpuWeights::kF16, 64, kv);
    ASSERT_GE(gpu->window_slots(), kWindows);
    ASSERT_GE(gpu->sequence_slots(), kSequences);
    std::mt19937 gen(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_int_distribution<int> any_token(0, dims.n_vocab - 1);
    const size_t per = size_t(dims.n_mels) * 2 * size_t(dims.n_audio_ctx);
    std::vector<float> mel(kWindows * per);
    for (auto& x : mel) x = normal(gen);
    // Windows encoded one at a time, then all four in one encoder batch into scattered slots: the same K/V
    // (cuBLASLt's order of sums does not depend on the row count here, so the bound is loose).
    std::vector<std::vector<std::vector<float>>> one_by_one;
    for (int w = 0; w < kWindows; ++w) {
      gpu->encode_window(mel.data() + size_t(w) * per, w);
      one_by_one.push_back(gpu->cross_kv_host(w));
    }
    const std::vector<int> scattered = {2, 0, 3, 1};  // window w goes to slot scattered[w] first
    gpu->encode_windows(mel.data(), scattered.data(), kWindows);
    double cross_diff = 0, cross_max = 0;
    for (int w = 0; w < kWindows; ++w) {
      const auto got = gpu->cross_kv_host(scattered[size_t(w)]);
      for (size_t l = 0; l < got.size(); ++l) {
        for (size_t i = 0; i < got[l].size(); ++i) {
          cross_diff = std::max(cross_diff, double(std::fabs(got[l][i] - one_by_one[size_t(w)][l][i])));
          cross_max = std::max(cross_max, double(std::fabs(one_by_one[size_t(w)][l][i])));
        }
      }
    }
    std::printf("  encoder batch of 4 into slots 2/0/3/1: max |batched - alone| %.3g of %.3g\n", cross_diff, cross_max);
    EXPECT_LE(cross_diff, 0.02 * cross_max);
    const std::vector<int> windows = {0, 1, 2, 3};
    gpu->encode_windows(mel.data(), windows.data(), kWindows);

    // Every sequence gets its own prompt, then its step alone (the reference).
    std::vector<int> token(kSequences);
    std::vector<std::vector<float>> alone(kSequences, std::vector<float>(size_t(dims.n_vocab)));
    std::vector<float> prompt_logits(size_t(dims.n_vocab));
    for (int s = 0; s < kSequences; ++s) {
      std::vector<int> prompt(kPrompt);
      for (int& t : prompt) t = any_token(gen);
      const int last = kPrompt - 1;
      gpu->prefill(window_of(s), s, prompt.data(), kPrompt, 0, &last, 1, prompt_logits.data());
      token[size_t(s)] = any_token(gen);
      gpu->step_window(window_of(s), s, 1, &token[size_t(s)], kPrompt, alone[size_t(s)].data());
    }
    // The same steps again (each rewrites its own row kPrompt) in groups: 8 rows, then all 24.
    const char* name = kv == GpuKvCache::kF16 ? "fp16" : "int8 dynamic";
    check_groups(*gpu, {{13, 3}, {0, 1}, {6, 2}, {20, 2}}, token, alone,
                 (std::string(name) + ", 8 rows in 4 groups").c_str());
    // A row count's first step runs eagerly, its second is captured into a CUDA graph, later ones replay it
    // (with other slots: where rows live is data of the step).
    check_groups(*gpu, {{18, 6}, {0, 5}, {12, 6}, {5, 1}, {9, 3}, {6, 3}}, token, alone,
                 (std::string(name) + ", 24 rows in 6 groups (eager)").c_str());
    check_groups(*gpu, {{0, 6}, {6, 6}, {12, 6}, {18, 6}}, token, alone,
                 (std::string(name) + ", 24 rows in 4 groups (captured)").c_str());
    check_groups(*gpu, {{12, 4}, {18, 6}, {0, 2}, {16, 2}, {2, 4}, {6, 6}}, token, alone,
                 (std::string(name) + ", 24 rows in 6 groups (replayed)").c_str());
  }
}

// Token queries answered on the device after a batched step: each chosen token must be among the best of its
// sequence's own logits (stepped alone; the batched logits differ from those by rounding only, so a choice is
// checked by its logit, not its id), forbidden ranges must hold, a query beyond the device's limits gets the
// logits back with empty choices, and a sampled token must be an allowed one with its log-probability.
TEST(GpuWhisperBatch, QueriesAreAnsweredFromTheStepsLogits) {
  if (!gpu_available()) GTEST_SKIP() << "no CUDA device";
  const GpuDims dims = dims_for_size("tiny");
  const int n_vocab = dims.n_vocab;
  auto gpu = GpuWhisper::create_random(dims, 8, 5);
  std::mt19937 gen(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const size_t per = size_t(dims.n_mels) * 2 * size_t(dims.n_audio_ctx);
  std::vector<float> mel(2 * per);
  for (auto& x : mel) x = normal(gen);
  const std::vector<int> windows = {0, 1};
  gpu->encode_windows(mel.data(), windows.data(), 2);
  constexpr int kSeqs = 6;
  const std::vector<int> token = {11, 220, 50257, 13, 400, 1000};
  std::vector<std::vector<float>> alone(kSeqs, std::vector<float>(size_t(n_vocab)));
  std::vector<float> prompt_logits(static_cast<size_t>(n_vocab));
  for (int s = 0; s < kSeqs; ++s) {
    const int prompt[kPrompt] = {50258, 50259 + s, 50359};
    const int last = kPrompt - 1;
    gpu->prefill(s / 2 % 2, s, prompt, kPrompt, 0, &last, 1, prompt_logits.data());
    gpu->step_window(s / 2 % 2, s, 1, &token[size_t(s)], kPrompt, alone[size_t(s)].data());
  }
  double scale = 0;
  for (const auto& row : alone) {
    for (float v : row) scale = std::max(scale, double(std::fabs(v)));
  }
  const double tol = 0.02 * scale;

  // sequences 0-1: top 5; 2: top 1 with its best 3 tokens forbidden; 3: top 40 (logits back); 4-5: sampled
  std::vector<model::TokenQuery> q(kSeqs);
  q[0].top = q[1].top = 5;
  std::vector<int> order(static_cast<size_t>(n_vocab));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return alone[2][size_t(a)] > alone[2][size_t(b)]; });
  for (int j = 0; j < 3; ++j) q[2].rules.forbidden.emplace_back(order[size_t(j)], order[size_t(j)] + 1);
  q[3].top = 40;
  for (int s : {4, 5}) {
    q[size_t(s)].temperature = 1.0;
    q[size_t(s)].uniform = 0.5;
    q[size_t(s)].rules.forbidden.emplace_back(0, 50000);
  }
  std::vector<model::TokenChoice> choices(kSeqs);
  std::vector<float> logits(size_t(kSeqs) * size_t(n_vocab), NAN);
  std::vector<GpuWhisper::StepGroup> groups;
  // groups {0, 1}, {2}, {3}, {4, 5}: a group beyond the device's limits (top 40) is answered by logits alone
  for (const auto& [s, batch] : {std::pair{0, 2}, std::pair{2, 1}, std::pair{3, 1}, std::pair{4, 2}}) {
    groups.push_back({s / 2 % 2, s, batch, kPrompt, &token[size_t(s)], logits.data() + size_t(s) * size_t(n_vocab),
                      q.data() + s, choices.data() + s});
  }
  gpu->step_groups(groups.data(), int(groups.size()));

  auto sorted_allowed = [&](int s) {
    std::vector<float> v;
    for (int i = 0; i < n_vocab; ++i) {
      bool ok = true;
      for (const auto& [b, e] : q[size_t(s)].rules.forbidden) ok = ok && (i < b || i >= e);
      if (ok) v.push_back(alone[size_t(s)][size_t(i)]);
    }
    std::sort(v.rbegin(), v.rend());
    return v;
  };
  for (int s : {0, 1, 2}) {
    const std::vector<float> best = sorted_allowed(s);
    ASSERT_EQ(choices[size_t(s)].ids.size(), size_t(q[size_t(s)].top)) << "sequence " << s;
    for (size_t j = 0; j < choices[size_t(s)].ids.size(); ++j) {
      const int id = choices[size_t(s)].ids[j];
      ASSERT_GE(id, 0);
      for (const auto& [b, e] : q[size_t(s)].rules.forbidden) EXPECT_TRUE(id < b || id >= e) << "forbidden " << id;
      EXPECT_NEAR(alone[size_t(s)][size_t(id)], best[j], tol) << "sequence " << s << ", choice " << j;
    }
  }
  EXPECT_TRUE(choices[3].ids.empty()) << "top 40 is beyond the device's limit: logits instead";
  double worst = 0;
  for (int i = 0; i < n_vocab; ++i) {
    worst = std::max(worst, double(std::fabs(logits[size_t(3) * size_t(n_vocab) + size_t(i)] - alone[3][size_t(i)])));
  }
  EXPECT_LE(worst, tol);
  for (int s : {4, 5}) {
    ASSERT_EQ(choices[size_t(s)].ids.size(), 1u);
    const int id = choices[size_t(s)].ids[0];
    EXPECT_GE(id, 50000) << "sampled a forbidden token";
    const std::vector<float>& x = alone[size_t(s)];
    const float mx = *std::max_element(x.begin() + 50000, x.end());
    double sum = 0;
    for (int i = 50000; i < n_vocab; ++i) sum += std::exp(double(x[size_t(i)] - mx));
    EXPECT_NEAR(choices[size_t(s)].logprobs[0], x[size_t(id)] - mx - std::log(sum), 2 * tol);
  }
}

// Slots that cannot fit the device: a typed error (the GPU backend halves its transcriptions on it), nothing
// left allocated, and no error left behind for the next runner's launches.
TEST(GpuWhisperBatch, OutOfMemoryIsTypedAndLeavesNothingBehind) {
  if (!gpu_available()) GTEST_SKIP() << "no CUDA device";
  EXPECT_THROW(GpuWhisper::create_random(dims_for_size("tiny"), 1000000), GpuOutOfMemory);  // ~20 TB of slots
  auto gpu = GpuWhisper::create_random(dims_for_size("tiny"), 2);
  const std::vector<float> mel(size_t(gpu->dims().n_mels) * 2 * size_t(gpu->dims().n_audio_ctx), 0.5f);
  gpu->encode_window(mel.data(), 1);
  std::vector<float> logits(size_t(gpu->dims().n_vocab));
  const int token = 50257 % gpu->dims().n_vocab;
  gpu->step_window(1, 1, 1, &token, 0, logits.data());
  EXPECT_TRUE(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); }));
}

// The logits buffers: page-locked, reused for requests up to their (power-of-two) size, alive past the pool.
TEST(GpuWhisperBatch, PinnedBuffersArePageLockedAndReused) {
  if (!gpu_available()) GTEST_SKIP() << "no CUDA device";
  std::shared_ptr<float> kept;
  {
    PinnedBuffers pool;
    float* first = nullptr;
    {
      const std::shared_ptr<float> a = pool.take(51865 * 5);
      first = a.get();
      cudaPointerAttributes attr{};
      ASSERT_EQ(cudaPointerGetAttributes(&attr, a.get()), cudaSuccess);
      EXPECT_EQ(attr.type, cudaMemoryTypeHost);  // page-locked host memory
      a.get()[51865 * 5 - 1] = 1.0f;             // all of it usable
    }
    const std::shared_ptr<float> b = pool.take(51865 * 3);  // fits the returned block
    EXPECT_EQ(b.get(), first);
    kept = pool.take(51865 * 5);  // the first is in use: a new one
    EXPECT_NE(kept.get(), first);
  }
  kept.get()[0] = 2.0f;  // outlives the pool object
  EXPECT_EQ(kept.get()[0], 2.0f);
}

}  // namespace
}  // namespace wisp::runtime
