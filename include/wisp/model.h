// The wisp public API: load a model, transcribe audio.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "wisp/errors.h"
#include "wisp/transcript.h"

namespace wisp {

// What one 30 s window was decoded with and what came out (TranscribeOptions::on_window).
struct WindowTrace {
  int seek = 0;              // first mel frame (10 ms) of the window
  std::vector<int> prompt;   // decoder input before the first generated token (previous text, SOT
                             // sequence, <|notimestamps|>, a forced prefix)
  std::vector<int> tokens;   // the chosen result's tokens (a forced prefix, then the generated ones)
  double temperature = 0.0;  // of the last attempt of the fallback
  int attempts = 1;          // temperatures tried
  double avg_logprob = 0.0;
  double compression_ratio = 0.0;
  double no_speech_prob = 0.0;
  bool skipped = false;  // judged silent: no segments
};

// Defaults are the reference CLI's (faster-whisper / openai-whisper): beam search of 5 at temperature 0,
// falling back to best-of-5 sampling at 0.2, 0.4, ... 1.0 when a window's result fails the thresholds.
// Greedy decoding without fallback (the reference's fastest mode) is beam_size = 1, temperatures = {0}.
struct TranscribeOptions {
  std::string language = "auto";    // "auto" detects it (multilingual models); else an ISO code ("en")
  std::string task = "transcribe";  // or "translate" (to English)

  // Search.
  int beam_size = 5;            // beams at temperature 0; 1 = greedy
  int best_of = 5;              // sequences sampled at a temperature above 0; the best is kept
  double patience = 1.0;        // beam search stops after round(beam_size × patience) finished beams
  double length_penalty = 1.0;  // results are ranked by sum_logprob / length^length_penalty
  // Tried in order while a window's result fails the thresholds below (the temperature fallback).
  std::vector<double> temperatures{0.0, 0.2, 0.4, 0.6, 0.8, 1.0};
  std::optional<double> compression_ratio_threshold = 2.4;  // fail above this gzip ratio (repetitive text)
  std::optional<double> logprob_threshold = -1.0;           // fail below this average log-probability
  std::optional<double> no_speech_threshold = 0.6;          // skip a window when P(no speech) is above this and its
                                                            // average log-probability is below logprob_threshold
  uint64_t seed = 0;  // of the sampler (temperatures above 0); same seed, same transcript

  // Prompting.
  bool condition_on_previous_text = true;    // the previous window's text is the next window's prompt
  double prompt_reset_on_temperature = 0.5;  // ... unless that window needed a temperature above this
  std::string initial_prompt;                // text placed before the first window, as previous text
  bool carry_initial_prompt = false;         // keep initial_prompt at the start of every window's prompt
  std::string prefix;                        // text the first window's transcript is forced to start with

  // Suppression and timestamps.
  // Token ids never sampled: -1 stands for the model's list of non-speech symbols; the task and control
  // tokens are always added (unless the list is empty, which suppresses nothing, as the reference).
  std::vector<int> suppress_tokens{-1};
  bool suppress_blank = true;          // no blank or end-of-text as a window's first token
  bool timestamps = true;              // false: decode with <|notimestamps|> (one segment per window)
  double max_initial_timestamp = 1.0;  // the first timestamp of a window is at most this (seconds)
  // Only transcribe these clips: start,end,start,end,... in seconds; an odd count runs the last clip to the
  // end of the audio. Empty = all of it.
  std::vector<double> clip_timestamps;
  // Long audio: transcribe it as up to this many parts at once, cut at the quietest 0.1 s near equal divisions
  // (every part at least 60 s), each part its own seek loop on its own thread; on a GPU their decode steps
  // share batched calls. At most LoadOptions::concurrency parts are used. The text before a cut is not the
  // prompt after it, so the transcript may differ from one pass around the cuts. 1: one pass, the reference's
  // way. Not with clip_timestamps.
  int parts = 1;

  // Word timestamps (cross-attention alignment).
  bool word_timestamps = false;
  std::string prepend_punctuations = "\"'“¿([{-";                // merged into the following word
  std::string append_punctuations = "\"'.。,，!！?？:：”)]}、";  // merged into the previous word
  // With word timestamps: skip silences longer than this (seconds) around a likely hallucination.
  std::optional<double> hallucination_silence_threshold;

  // Called after each window with (seconds transcribed, total seconds).
  std::function<void(double, double)> on_progress;
  // Called after each window's decoding with what went in and came out (diagnostics, tests).
  std::function<void(const WindowTrace&)> on_window;
};

struct ModelInfo {
  std::string path;
  std::string name;
  bool multilingual = false;
  int n_mels = 0, n_vocab = 0, n_audio_layer = 0, n_text_layer = 0, n_state = 0, n_head = 0;
  std::string device;  // "cpu", or "cuda (<GPU name>)"
  // Transcriptions (or parts) that may run at once: LoadOptions::concurrency, or fewer when the GPU's memory
  // holds the device state of fewer.
  int concurrency = 1;
};

struct LoadOptions {
  int threads = 0;  // CPU threads; <= 0 uses every core
  // "cpu", "cuda" (the network on the first CUDA GPU; the mel, the search and word alignment stay on the CPU)
  // or "auto" (cuda when this build has CUDA and a GPU is visible, else cpu).
  std::string device = "auto";
  // GPU only: how the decoder's K/V caches are stored: "fp16", "int8" (calibrated scales from `wisp
  // calibrate`), "int8-dynamic" (a scale per token and head) or "fp8" (e4m3, calibrated scales or 1).
  std::string kv_cache = "fp16";
  // CPU only, for accuracy studies: keep the CPU's fp32 caches but round every K/V row as `kv_cache` would
  // store it on the GPU (docs/quantization.md).
  bool round_kv_on_cpu = false;
  // Transcriptions that may run at once on this model (Model::transcribe from that many threads). On a GPU
  // each gets its own device slots (cross-attention K/V, caches; fewer transcriptions are kept when the free
  // device memory cannot hold them all, see ModelInfo::concurrency) and their decode steps and windows are run
  // as batched calls, which is how several files transcribe faster than one after the other. 1 to 64.
  int concurrency = 1;
  // GPU only: the search's logit rules and token choice (argmax, the beams' top tokens, sampling) run on the
  // device, so a step copies back a few numbers per sequence instead of its logits. false: the logits come back
  // and the host chooses (for comparison; the same transcripts up to rounding).
  bool device_token_choice = true;
  // The encoder's GELU: "erf" (Whisper's own; on the GPU one more pass over each fc1 output), "tanh" (the
  // approximation whisper.cpp uses, inside cuBLASLt's GEMM epilogue: ~9 % less GPU encoder time on large-v2, no
  // loss of accuracy measured, docs/cuda.md; GPU only) or "auto" (tanh on the GPU, erf on the CPU).
  std::string encoder_gelu = "auto";
};

class Model {
 public:
  // Loads a wisp engine file (see `wisp convert`). Throws IoError, ModelError, or InvalidArgument (an unknown
  // device or KV-cache type, cuda without a usable GPU, a quantised KV cache on the CPU, int8 without
  // calibration).
  static std::unique_ptr<Model> load(const std::string& path, const LoadOptions& options);
  static std::unique_ptr<Model> load(const std::string& path, int threads = 0, const std::string& device = "auto") {
    return load(path, LoadOptions{threads, device, "fp16", false});
  }
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // samples: 16 kHz mono in [-1, 1]. Throws InvalidArgument (bad options) or AudioError (no samples). Safe to
  // call from several threads at once: on a GPU up to ModelInfo::concurrency transcriptions run together (their
  // decode steps batched) and further callers wait for one of them to finish.
  Transcript transcribe(std::span<const float> samples, const TranscribeOptions& options = {}) const;
  // Decodes any audio file FFmpeg reads and transcribes it.
  Transcript transcribe_file(const std::string& path, const TranscribeOptions& options = {}) const;

  ModelInfo info() const;

  struct Impl;

 private:
  friend struct ModelAccess;  // the pipeline's own ways to make a Model (src/pipeline/model_access.h)
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace wisp
