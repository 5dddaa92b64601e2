// GpuWhisper: the Whisper forward pass on one CUDA GPU, composed directly from the kernels in
// src/kernels/cuda (docs/cuda.md, "GPU runner"). First slice of issue 3: fp16 weights uploaded once into one
// device arena, batched encoder, cross-attention K/V, and a batched greedy decode step with a device KV cache
// and a device argmax. The batch decodes in lockstep (every sequence has the same length).
//
// This header has no CUDA types, so CPU-only code (apps/wisp) can include it. The library behind it
// (wisp_runtime) is built from gpu_whisper.cpp when WISP_CUDA is on and from gpu_stub.cpp otherwise, where
// every entry point throws "built without CUDA".
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/token_choice.h"
#include "runtime/bench_report.h"

namespace wisp::runtime {

struct GpuDims {
  int n_mels = 80, n_vocab = 51865, n_audio_ctx = 1500, n_audio_state = 1280, n_audio_head = 20, n_audio_layer = 32;
  int n_text_ctx = 448, n_text_state = 1280, n_text_head = 20, n_text_layer = 32;
};

// tiny, tiny.en, base, small, medium, large-v1/v2, large-v3 (throws std::invalid_argument otherwise).
GpuDims dims_for_size(const std::string& size);

// Every engine-file tensor name the runner reads, in upload order (gpu_dims.cpp; GpuWhisper::create throws
// if its source lacks one).
std::vector<std::string> weight_names(const GpuDims& dims);

// Returns the tensor of an engine-file name ("encoder.blocks.0.attn.qkv.weight", docs/engine-format.md), f32
// or f16, on the host. The runner converts to fp16 (matrices, biases) or fp32 (norms) while uploading.
using TensorSource = std::function<core::Tensor(const std::string& name)>;

// How the block linear weights are stored on the device: fp16, int8 per output channel, or int4 in groups
// along the input (docs/engine-format.md, "Quantised weights").
enum class GpuWeights { kF16, kInt8, kInt4 };

// How the decoder's K/V caches (self-attention and the cross-attention K/V of each window) are stored
// (docs/quantization.md): fp16; int8 with one calibrated scale per (layer, head) from the engine file's
// "decoder.blocks.N.attn.kv_amax" / "cross_attn.kv_amax" tensors (`wisp calibrate`); int8 with a scale per token
// and head computed as rows are written; FP8 e4m3 with the calibrated scales (scale 1 without calibration).
enum class GpuKvCache { kF16, kInt8, kInt8Dynamic, kFp8 };
// "fp16", "int8", "int8-dynamic", "fp8" (throws std::invalid_argument otherwise).
GpuKvCache kv_cache_from_name(const std::string& name);

// The device has not the memory GpuWhisper::create needs (nothing stays allocated).
struct GpuOutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// True when the current CUDA device has compute capability 8.0 or newer, the kernels' minimum (false without
// one, and in CPU-only builds).
bool gpu_available();

class GpuWhisper {
 public:
  // Slots of device state: `windows` cross-attention K/V buffers (one 30 s window each) and `sequences`
  // self-attention caches (one decoded sequence each, n_text_ctx rows).
  struct Capacity {
    int windows = 1;
    int sequences = 1;
  };
  // Uploads the weights (random for `create_random`: N(0, 0.02) weights, norms near γ = 1, β = 0) and allocates
  // every buffer: for `capacity`, or for up to `max_batch` windows each decoded as one sequence (the benchmark
  // form); nothing is allocated after this. Throws std::runtime_error on CUDA errors.
  static std::unique_ptr<GpuWhisper> create(const GpuDims& dims, Capacity capacity, const TensorSource& source,
                                            GpuKvCache kv_cache = GpuKvCache::kF16);
  static std::unique_ptr<GpuWhisper> create(const GpuDims& dims, int max_batch, const TensorSource& source) {
    return create(dims, Capacity{max_batch, max_batch}, source);
  }
  static std::unique_ptr<GpuWhisper> create_random(const GpuDims& dims, int max_batch, uint64_t seed = 1,
                                                   GpuWeights weights = GpuWeights::kF16, int group = 64,
                                                   GpuKvCache kv_cache = GpuKvCache::kF16);
  ~GpuWhisper();
  GpuWhisper(const GpuWhisper&) = delete;
  GpuWhisper& operator=(const GpuWhisper&) = delete;

  const GpuDims& dims() const;
  int max_batch() const;
  std::string device_name() const;

  // The log-mel of `batch` 30 s windows on the GPU (cuFFT; kernels/cuda/log_mel.h) into the device mel buffer
  // that encode(nullptr, batch) reads. samples: host fp32 [batch, 2·n_audio_ctx·160] at 16 kHz (null: the device
  // audio buffer as it is, for benchmarks). No padding past the window (faster-whisper pads the whole file).
  // Asynchronous unless samples are given. The first call makes the cuFFT plans and workspace (~10 MB).
  void log_mel(const float* samples, int batch);
  // The log-mel of a whole recording (transcription): samples host fp32 [n] at 16 kHz, padded by 160 zeros as
  // LogMel::compute pads them; returns host fp32 [n_mels, (n + 160) / 160], LogMel::compute's values within fp32
  // FFT rounding. Runs in chunks of 30 s through the same cuFFT plans as log_mel(). Synchronises.
  std::vector<float> log_mel_host(const float* samples, int64_t n);
  // mel: host fp32 [batch, n_mels, 2·n_audio_ctx] (null: the device mel buffer as it is, for benchmarks).
  // Leaves the features [batch, n_audio_ctx, d] on the device. Asynchronous unless mel is given.
  void encode(const float* mel, int batch);
  // Cross-attention K/V of every decoder layer from the current features. Asynchronous.
  void cross_kv(int batch);
  // Empties the self-attention cache of `batch` sequences.
  void reset(int batch);
  // Appends one token to each of `batch` sequences and returns the greedy next tokens (device argmax), with
  // their log-probabilities when `logprob` is given. Synchronises.
  std::vector<int> decode_step(const int* tokens, int batch, std::vector<float>* logprob = nullptr);
  // Benchmark form: the tokens are the previous step's argmax (device to device), nothing synchronises.
  void decode_step_feedback(int batch);
  int cache_length() const;
  // Decode steps replay one CUDA graph per batch size (default on; off: every kernel launched eagerly).
  void set_cuda_graphs(bool on);
  // Linear layers of up to 8 rows (64 with int8/int4 weights: decode steps) use the hand-written GEMV kernels,
  // with the residual adds (and, per set_norm_placement, the pre-norms) fused into them (default on; off:
  // cuBLASLt and separate norm kernels, for comparison). Set before the first decode step.
  void set_gemv(bool on);
  // The most rows a linear layer runs on the GEMV kernels, for every weight type (up to kernels/cuda/gemv.h
  // kGemvMaxGroupedRows, as groups of 8 on the tensor-core kernel); more rows use cuBLASLt (quantised weights
  // dequantised first). 0 (the default): kGemvMaxRows = 8 for fp16 weights, kQuantizedGemvMaxRows for int8 /
  // int4. Measurement (`wisp bench --gemv-max-rows`). Set before the first decode step.
  void set_gemv_max_rows(int rows);
  // Up to this many rows, int8 / int4 layers run on the GEMV kernels by default (dequantised in registers; from 9
  // rows every row of a layer in one block), which is faster than dequantising them for cuBLASLt at every batch up
  // to 32 (large-v2 on an H200, docs/cuda.md). kernels/cuda/gemv.h kGemvMaxGroupedRows.
  static constexpr int kQuantizedGemvMaxRows = 64;
  // Programmatic dependent launch of the decode-step kernels (kernels/cuda/cuda_kernels.h; default on, sm_90+;
  // process-wide). Set before the first decode step.
  void set_programmatic_launch(bool on);
  // Where the decoder's pre-norms of a decode step on the GEMV path run: folded into the GEMVs that consume
  // them (gemv.h RowNorm; one launch fewer per norm) or as layer_norm kernels before them. kAuto folds where
  // that measured faster on an H200 (docs/cuda.md): fp16 weights and at most kAutoFoldMaxRows rows (large-v2
  // batch 1: 1.343 → 1.263 ms a step; from 3 rows on, or with int4 weights, folding was slower). Set before
  // the first decode step.
  enum class NormPlacement { kAuto, kFolded, kSeparate };
  static constexpr int kAutoFoldMaxRows = 2;
  void set_norm_placement(NormPlacement placement);
  // The decode step's K/V append inside the QKV GEMV's epilogue (gemv.h KvAppend) instead of its own kernel.
  // Default on: equal or faster at every row count and weight type measured on an H200 (batch 1 1.343 →
  // 1.325 ms; docs/cuda.md). Set before the first decode step.
  void set_fused_kv_append(bool on);
  // Measurement only (`wisp_gpu_bench --skip`): the decode step leaves out the launches of these parts (its
  // results are then meaningless); what a part adds to a step's time is the difference to the full step
  // (docs/cuda.md, "Where a decode step's time goes"). Set before the first decode step.
  enum StepPart : unsigned {
    kStepNorms = 1u,              // the layer_norm / add_layer_norm launches (GEMV path)
    kStepAppend = 2u,             // the K/V appends
    kStepSelfAttention = 4u,      // decoder self-attention
    kStepCrossAttention = 8u,     // cross-attention
    kStepAttentionLinears = 16u,  // QKV, attention out, cross query, cross out
    kStepMlp = 32u,               // fc1 + fc2
    kStepLogits = 64u,            // final norm, logits, argmax
  };
  void set_step_ablation(unsigned parts);
  // kernels/cuda/gemv.h set_gemv_fill (process-wide; measurement).
  void set_gemv_fill(int percent);
  // kernels/cuda/gemv.h set_gemv_wgmma (process-wide; measurement).
  void set_gemv_wgmma(int max_cluster);
  // kernels/cuda/cuda_kernels.h set_attention_wgmma: the encoder attention's kernel (process-wide; measurement).
  void set_attention_wgmma(bool on);
  // kernels/cuda/cuda_kernels.h set_decoder_attention_mma: the decode steps' attention on the tensor cores or the
  // CUDA cores (process-wide; measurement).
  void set_decoder_attention_mma(bool on);
  // kernels/cuda/gemm.h GemmContext::set_autotune for this model's cuBLASLt plans (default on; off: the same
  // algorithm on every run). Applies to plans made after the call.
  void set_gemm_autotune(bool on);
  // The encoder's GELU (conv1, conv2, fc1): the tanh approximation inside cuBLASLt's fused bias+GELU epilogue
  // (the default; whisper.cpp's form) or Whisper's exact erf, a second pass over the GEMM's output after cuBLASLt's
  // bias epilogue. Tanh measured no loss of accuracy (docs/cuda.md, "cuBLASLt GELU is the tanh approximation") and
  // saves that pass (large-v2, H200: batch-32 encoder 137 → 125 ms). Applies to encoder calls after the call.
  enum class EncoderGelu { kErf, kTanh };
  void set_encoder_gelu(EncoderGelu form);

  // ---- Transcription form: the caller (runtime/gpu_network.cpp) decides which slot holds what. Every call
  // but copy_sequences synchronises; token ids and lengths are checked and throw std::invalid_argument.
  int window_slots() const;
  int sequence_slots() const;
  // Encoder and cross-attention K/V of `count` windows in one encoder batch: mel, host fp32
  // [count, n_mels, 2·n_audio_ctx]; window i goes to slot windows[i] (count <= window_slots()).
  void encode_windows(const float* mel, const int* windows, int count);
  void encode_window(const float* mel, int window) { encode_windows(mel, &window, 1); }
  // A prompt in one pass: tokens [n] of sequence slot `seq` at positions [start, start + n), over window
  // `window` (the slot's cache rows [0, start) hold the sequence's earlier tokens). Writes the fp32 logits of
  // positions start + rows[i] to logits [n_rows, n_vocab].
  void prefill(int window, int seq, const int* tokens, int n, int start, const int* rows, int n_rows, float* logits);
  // Sequences of one decode step that share a window and a length: the beams or samples of one window, or
  // one file's sequence when several files decode together.
  struct StepGroup {
    int window = 0;  // window slot
    int seq = 0;     // the group's sequences are in slots [seq, seq + batch)
    int batch = 1;
    int start = 0;                // tokens in each sequence before this step
    const int* tokens = nullptr;  // [batch] the token appended to each sequence
    float* logits = nullptr;      // [batch, n_vocab] host, fp32: the logits after it
    // Instead of logits: each row's query (model/token_choice.h), answered into choices [batch] on the device
    // (kernels/cuda/token_select.h). A group whose queries do not fit the device's limits (more than
    // kMaxTopTokens tokens, more forbidden ranges than the step's buffer holds) gets its logits instead and
    // empty choices.
    const model::TokenQuery* queries = nullptr;  // [batch] or null
    model::TokenChoice* choices = nullptr;       // [batch] host
  };
  // One decode step of every group's sequences together (at most sequence_slots() rows, no sequence slot
  // twice). Replays one CUDA graph per total row count after the first two steps of that count: where the
  // rows' caches live is device data of the step. The groups' queries are answered by one launch after it.
  void step_groups(const StepGroup* groups, int count);
  void step_window(int window, int seq, int batch, const int* tokens, int start, float* logits) {
    const StepGroup g{window, seq, batch, start, tokens, logits};
    step_groups(&g, 1);
  }
  // Rows [0, length) of sequence slot src[i] into slot dst[i], every layer. No slot may be both a source and
  // a destination. Asynchronous (device-to-device copies on the runner's one stream, so ordered before every
  // later call): a beam search's reorder costs no round trip of its own.
  void copy_sequences(const int* src, const int* dst, int count, int length);
  // The cross-attention K/V of a window on the host, fp32: per decoder layer [n_audio_ctx, 2·d].
  std::vector<std::vector<float>> cross_kv_host(int window) const;

  // Copies of device state, as fp32 on the host: features [n_audio_ctx, d] of window b; logits [n_vocab] of
  // sequence b after the last step.
  std::vector<float> features(int b) const;
  std::vector<float> logits(int b) const;

  void synchronize() const;
  // Device memory this process holds (cudaMemGetInfo: total − free, minus what was used before create).
  size_t device_bytes_used() const;
  // The most it has held: device_bytes_used() plus the largest transient buffer of cuBLASLt autotuning
  // (allocated and freed during a GEMM's first call, so a later cudaMemGetInfo misses it).
  size_t peak_device_bytes() const;
  size_t weight_bytes() const;
  // CUDA-event timing of `fn` on the runner's stream, in milliseconds.
  float time_ms(const std::function<void()>& fn);

  struct Impl;

 private:
  explicit GpuWhisper(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Page-locked host buffers for the logits that decode steps copy back (GpuNetwork): a device-to-host copy
// into them runs at the link's full speed, with no staging copy by the driver, and needs no allocation per
// step. A buffer returns to the pool when its last user lets go and serves later requests of up to its size
// (sizes are rounded up to powers of two). Without CUDA (or when page-locking fails) the buffers are
// ordinary memory.
class PinnedBuffers {
 public:
  PinnedBuffers();
  // `floats` floats, alive while the pointer (or a copy of it) is, even after the pool object is gone.
  std::shared_ptr<float> take(size_t floats);

  struct Pool;

 private:
  std::shared_ptr<Pool> pool_;
};

// "erf", "tanh" (throws std::invalid_argument otherwise).
GpuWhisper::EncoderGelu encoder_gelu_from_name(const std::string& name);

// `wisp bench`: runs the benchmark and returns what it measured (bench_report.h: bench_json, bench_table; see
// docs/cuda.md). model_path empty → random weights of `size`. Throws on errors (and in CPU-only builds).
struct BenchOptions {
  std::string size = "large-v2";
  std::string model_path;
  int batch = 1;
  int tokens = 100;
  int repeats = 5;
  bool cuda_graphs = true;
  bool gemv = true;
  bool programmatic_launch = true;
  std::string norms = "auto";  // NormPlacement: auto, folded or separate
  bool fused_kv_append = true;
  int gemv_fill = 50;                 // set_gemv_fill (kernels/cuda/gemv.h kDefaultGemvFill)
  int gemv_max_rows = 0;              // set_gemv_max_rows (0: per weight type)
  int gemv_wgmma = 8;                 // set_gemv_wgmma (kernels/cuda/gemv.h kDefaultGemvWgmmaCluster; 0: off)
  bool attention_wgmma = true;        // set_attention_wgmma (kernels/cuda/cuda_kernels.h)
  bool decoder_attention_mma = true;  // set_decoder_attention_mma (kernels/cuda/cuda_kernels.h)
  bool gemm_autotune = true;          // set_gemm_autotune
  std::string encoder_gelu = "tanh";  // set_encoder_gelu: tanh or erf (encoder_gelu_from_name)
  std::string skip;                   // comma list of step parts left out (set_step_ablation): norms, append,
                                      // self_attention, cross_attention, attention_linears, mlp, logits
  std::string weights = "fp16";       // random weights stored as fp16, int8 or int4
  int group = 64;                     // int4 group size
  std::string kv_cache = "fp16";      // kv_cache_from_name
};
BenchResult run_bench(const BenchOptions& options);

// An engine file as a TensorSource (+ its dims). Only in full builds (needs src/format); throws otherwise.
TensorSource open_engine_file(const std::string& path, GpuDims& dims);

}  // namespace wisp::runtime
