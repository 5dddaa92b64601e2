// `wisp bench` (gpu_whisper.h, docs/cuda.md "GPU runner"): the log-mel of B 30 s windows of audio (GPU), the
// encoder and the cross-attention K/V, then N greedy decode steps (each step's argmax fed back on the device),
// timed with CUDA events; every figure is the median of `repeats` runs after one warm-up run.
#include <algorithm>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "runtime/gpu_whisper.h"

namespace wisp::runtime {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// GpuWhisper::StepPart bits of a comma list of part names (BenchOptions::skip).
unsigned step_parts(const std::string& list) {
  static const std::pair<const char*, unsigned> kNames[] = {{"norms", GpuWhisper::kStepNorms},
                                                            {"append", GpuWhisper::kStepAppend},
                                                            {"self_attention", GpuWhisper::kStepSelfAttention},
                                                            {"cross_attention", GpuWhisper::kStepCrossAttention},
                                                            {"attention_linears", GpuWhisper::kStepAttentionLinears},
                                                            {"mlp", GpuWhisper::kStepMlp},
                                                            {"logits", GpuWhisper::kStepLogits}};
  unsigned bits = 0;
  std::stringstream in(list);
  for (std::string name; std::getline(in, name, ',');) {
    if (name.empty()) continue;
    const auto* it = std::find_if(std::begin(kNames), std::end(kNames), [&](const auto& n) { return name == n.first; });
    if (it == std::end(kNames)) throw std::invalid_argument("--skip: unknown step part '" + name + "'");
    bits |= it->second;
  }
  return bits;
}

GpuWhisper::NormPlacement norm_placement(const std::string& name) {
  if (name == "auto") return GpuWhisper::NormPlacement::kAuto;
  if (name == "folded") return GpuWhisper::NormPlacement::kFolded;
  if (name == "separate") return GpuWhisper::NormPlacement::kSeparate;
  throw std::invalid_argument("--norms must be auto, folded or separate");
}

}  // namespace

BenchResult run_bench(const BenchOptions& o) {
  if (o.batch < 1) throw std::invalid_argument("--batch must be >= 1");
  if (o.repeats < 1) throw std::invalid_argument("--repeats must be >= 1");
  const unsigned skip = step_parts(o.skip);
  GpuDims dims;
  std::unique_ptr<GpuWhisper> m;
  std::string label;
  if (!o.model_path.empty()) {
    const TensorSource src = open_engine_file(o.model_path, dims);
    m = GpuWhisper::create(dims, GpuWhisper::Capacity{o.batch, o.batch}, src, kv_cache_from_name(o.kv_cache));
    label = o.model_path;
  } else {
    dims = dims_for_size(o.size);
    GpuWeights w = GpuWeights::kF16;
    if (o.weights == "int8") {
      w = GpuWeights::kInt8;
    } else if (o.weights == "int4") {
      w = GpuWeights::kInt4;
    } else if (o.weights != "fp16") {
      throw std::invalid_argument("--weights must be fp16, int8 or int4");
    }
    m = GpuWhisper::create_random(dims, o.batch, 1, w, o.group, kv_cache_from_name(o.kv_cache));
    label =
        o.size + " (random " + o.weights + (w == GpuWeights::kInt4 ? " g" + std::to_string(o.group) : "") + " weights)";
  }
  if (o.tokens < 1 || o.tokens > dims.n_text_ctx) {
    throw std::invalid_argument("--tokens must be in [1, " + std::to_string(dims.n_text_ctx) + "]");
  }
  const int B = o.batch, N = o.tokens;
  m->set_cuda_graphs(o.cuda_graphs);
  m->set_gemv(o.gemv);
  m->set_programmatic_launch(o.programmatic_launch);
  m->set_norm_placement(norm_placement(o.norms));
  m->set_fused_kv_append(o.fused_kv_append);
  m->set_step_ablation(skip);
  m->set_gemv_fill(o.gemv_fill);
  m->set_gemv_max_rows(o.gemv_max_rows);
  m->set_gemv_wgmma(o.gemv_wgmma);
  m->set_attention_wgmma(o.attention_wgmma);
  m->set_decoder_attention_mma(o.decoder_attention_mma);
  m->set_gemm_autotune(o.gemm_autotune);
  m->set_encoder_gelu(encoder_gelu_from_name(o.encoder_gelu));
  std::vector<double> mel, enc, ckv, dec;
  for (int r = 0; r <= o.repeats; ++r) {  // run 0 warms up (cuBLASLt plans, clocks)
    const double l = m->time_ms([&] { m->log_mel(nullptr, B); });
    const double e = m->time_ms([&] { m->encode(nullptr, B); });
    const double c = m->time_ms([&] { m->cross_kv(B); });
    m->reset(B);
    const double t = m->time_ms([&] {
      for (int i = 0; i < N; ++i) m->decode_step_feedback(B);
    });
    if (r > 0) mel.push_back(l), enc.push_back(e), ckv.push_back(c), dec.push_back(t);
  }
  BenchResult res;
  res.model = label;
  res.card = m->device_name();
  res.batch = B, res.tokens = N, res.repeats = o.repeats;
  res.cuda_graphs = o.cuda_graphs, res.gemv = o.gemv, res.programmatic_launch = o.programmatic_launch;
  res.norms = o.norms, res.fused_kv_append = o.fused_kv_append;
  res.skip = o.skip, res.gemv_fill = o.gemv_fill, res.gemv_max_rows = o.gemv_max_rows, res.kv_cache = o.kv_cache;
  res.gemv_wgmma = o.gemv_wgmma, res.attention_wgmma = o.attention_wgmma, res.gemm_autotune = o.gemm_autotune;
  res.decoder_attention_mma = o.decoder_attention_mma;
  res.encoder_gelu = o.encoder_gelu;
  res.mel_ms = median(mel), res.encoder_ms = median(enc), res.cross_kv_ms = median(ckv), res.decode_ms = median(dec);
  res.weights_gb = double(m->weight_bytes()) / 1e9;
  res.peak_mem_gb = double(m->peak_device_bytes()) / 1e9;
  return res;
}

}  // namespace wisp::runtime
