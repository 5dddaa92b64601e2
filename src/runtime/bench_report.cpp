#include "runtime/bench_report.h"

#include <sstream>

namespace wisp::runtime {

namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

const char* boolean(bool b) { return b ? "true" : "false"; }

}  // namespace

std::string bench_json(const BenchResult& r) {
  std::ostringstream j;
  j.setf(std::ios::fixed);
  j.precision(3);
  j << "{\"engine\": \"wisp\", \"model\": \"" << esc(r.model) << "\", \"card\": \"" << esc(r.card)
    << "\", \"batch\": " << r.batch << ", \"tokens\": " << r.tokens << ", \"repeats\": " << r.repeats
    << ", \"cuda_graphs\": " << boolean(r.cuda_graphs) << ", \"gemv\": " << boolean(r.gemv)
    << ", \"programmatic_launch\": " << boolean(r.programmatic_launch) << ", \"norms\": \"" << esc(r.norms)
    << "\", \"fused_kv_append\": " << boolean(r.fused_kv_append) << ", \"skip\": \"" << esc(r.skip)
    << "\", \"gemv_fill\": " << r.gemv_fill << ", \"gemv_max_rows\": " << r.gemv_max_rows
    << ", \"gemv_wgmma\": " << r.gemv_wgmma << ", \"attention_wgmma\": " << boolean(r.attention_wgmma)
    << ", \"decoder_attention_mma\": " << boolean(r.decoder_attention_mma)
    << ", \"gemm_autotune\": " << boolean(r.gemm_autotune) << ", \"encoder_gelu\": \"" << esc(r.encoder_gelu)
    << "\", \"kv_cache\": \"" << esc(r.kv_cache) << "\", \"mel_ms\": " << r.mel_ms
    << ", \"encoder_ms\": " << r.encoder_ms << ", \"cross_kv_ms\": " << r.cross_kv_ms
    << ", \"decode_ms\": " << r.decode_ms << ", \"decode_ms_per_step\": " << r.decode_ms_per_step()
    << ", \"total_ms\": " << r.total_ms() << ", \"audio_s_per_s\": " << r.audio_s_per_s()
    << ", \"weights_gb\": " << r.weights_gb << ", \"peak_mem_gb\": " << r.peak_mem_gb << "}";
  return j.str();
}

std::string bench_table(const BenchResult& r) {
  std::ostringstream t;
  t.setf(std::ios::fixed);
  t.precision(3);
  t << "wisp bench: " << r.model << " on " << r.card << ", batch " << r.batch << ", " << r.tokens
    << " decode steps, K/V cache " << r.kv_cache << ", encoder GELU " << r.encoder_gelu << ", median of " << r.repeats
    << " runs";
  if (!r.skip.empty()) t << " (measurement: without " << r.skip << ")";
  t << "\n\n| stage | ms |\n|---|---|\n"
    << "| log-mel | " << r.mel_ms << " |\n"
    << "| encoder | " << r.encoder_ms << " |\n"
    << "| cross-attention K/V | " << r.cross_kv_ms << " |\n"
    << "| " << r.tokens << " decode steps | " << r.decode_ms << " |\n"
    << "| per decode step | " << r.decode_ms_per_step() << " |\n"
    << "| total | " << r.total_ms() << " |\n\n";
  t.precision(1);
  t << r.audio_s_per_s() << " audio seconds per second; weights " << r.weights_gb << " GB";
  t.precision(2);
  t << ", peak device memory " << r.peak_mem_gb << " GB\n";
  return t.str();
}

}  // namespace wisp::runtime
