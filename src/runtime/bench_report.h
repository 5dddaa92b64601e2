// What `wisp bench` measured (runtime/gpu_bench.cpp) and its two printed forms: one JSON object per run (the
// scripts in bench/ read it; keys documented in docs/cuda.md) and a table for people. Plain host code, built
// with or without CUDA.
#pragma once

#include <string>

namespace wisp::runtime {

struct BenchResult {
  std::string model;  // the engine file, or "<size> (random <weights> weights)"
  std::string card;   // the GPU's name
  int batch = 0, tokens = 0, repeats = 0;
  // the options the run used (BenchOptions)
  bool cuda_graphs = true, gemv = true, programmatic_launch = true, fused_kv_append = true;
  std::string norms, skip, kv_cache;
  int gemv_fill = 0, gemv_max_rows = 0, gemv_wgmma = 0;
  bool attention_wgmma = true;
  bool decoder_attention_mma = true;
  bool gemm_autotune = true;
  std::string encoder_gelu = "tanh";
  // medians over the repeats, milliseconds
  double mel_ms = 0, encoder_ms = 0, cross_kv_ms = 0, decode_ms = 0;
  double weights_gb = 0, peak_mem_gb = 0;

  double total_ms() const { return mel_ms + encoder_ms + cross_kv_ms + decode_ms; }
  double decode_ms_per_step() const { return tokens > 0 ? decode_ms / tokens : 0.0; }
  // 30 s of audio per window of the batch, over the total time.
  double audio_s_per_s() const { return total_ms() > 0 ? batch * 30.0 / (total_ms() / 1000.0) : 0.0; }
};

// One line of JSON: {"engine": "wisp", "model": …, "decode_ms_per_step": …, …}.
std::string bench_json(const BenchResult& r);
// A markdown table of the stages with a heading line and a closing line of the rates and memory.
std::string bench_table(const BenchResult& r);

}  // namespace wisp::runtime
