// `wisp bench`'s two printed forms (runtime/bench_report.h) from a made-up result: the JSON the scripts in
// bench/ read (every key, derived figures computed from the stages) and the table for people.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "runtime/bench_report.h"

namespace {

wisp::runtime::BenchResult sample() {
  wisp::runtime::BenchResult r;
  r.model = "large-v2 (random fp16 weights)";
  r.card = "NVIDIA \"H200\"";  // quotes must be escaped in the JSON
  r.batch = 2, r.tokens = 100, r.repeats = 3;
  r.norms = "folded", r.skip = "norms", r.gemv_fill = 50, r.kv_cache = "fp8", r.gemm_autotune = false;
  r.encoder_gelu = "tanh";
  r.mel_ms = 0.5, r.encoder_ms = 10.0, r.cross_kv_ms = 1.5, r.decode_ms = 188.0;
  r.weights_gb = 3.088, r.peak_mem_gb = 3.63;
  return r;
}

TEST(BenchReport, JsonHoldsTheStagesAndWhatFollowsFromThem) {
  const auto j = nlohmann::json::parse(wisp::runtime::bench_json(sample()));
  EXPECT_EQ(j["engine"], "wisp");
  EXPECT_EQ(j["card"], "NVIDIA \"H200\"");
  EXPECT_EQ(j["batch"], 2);
  EXPECT_EQ(j["kv_cache"], "fp8");
  EXPECT_EQ(j["skip"], "norms");
  EXPECT_EQ(j["gemv_fill"], 50);
  EXPECT_EQ(j["cuda_graphs"], true);
  EXPECT_EQ(j["norms"], "folded");
  EXPECT_EQ(j["gemm_autotune"], false);
  EXPECT_EQ(j["encoder_gelu"], "tanh");
  EXPECT_DOUBLE_EQ(j["total_ms"].get<double>(), 200.0);
  EXPECT_DOUBLE_EQ(j["decode_ms_per_step"].get<double>(), 1.88);
  EXPECT_DOUBLE_EQ(j["audio_s_per_s"].get<double>(), 300.0);  // 2 windows of 30 s in 0.2 s
  for (const char* key : {"mel_ms", "encoder_ms", "cross_kv_ms", "decode_ms", "weights_gb", "peak_mem_gb", "model",
                          "tokens", "repeats", "gemv", "programmatic_launch", "fused_kv_append"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
}

TEST(BenchReport, TableNamesTheRunAndEveryStage) {
  const std::string t = wisp::runtime::bench_table(sample());
  for (const char* part : {"large-v2 (random fp16 weights) on NVIDIA \"H200\", batch 2, 100 decode steps",
                           "K/V cache fp8", "encoder GELU tanh", "without norms", "| encoder | 10.000 |",
                           "| 100 decode steps | 188.000 |", "| per decode step | 1.880 |", "| total | 200.000 |",
                           "300.0 audio seconds per second", "peak device memory 3.63 GB"}) {
    EXPECT_NE(t.find(part), std::string::npos) << part << "\n" << t;
  }
}

}  // namespace
