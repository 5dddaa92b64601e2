// Calibration (`wisp calibrate`): the largest |K| and |V| of every decoder layer and head, measured while
// transcribing real audio, stored in the engine file for the int8 and FP8 K/V caches of the GPU; and the input
// statistics of the linear layers after the block norms, for activation-aware weight quantisation.
#pragma once

#include <string>
#include <vector>

namespace wisp {

struct CalibrateOptions {
  // Also store the Gram matrix E[x xᵀ] of every block linear layer's inputs ("<stack>.blocks.N.<linear>.input_gram",
  // f32 [in, in]), which `wisp convert --weights int8|int4 --gptq` rounds the layers with. Large: in² floats per
  // layer (tiny.en +97 MB, base +258 MB, large-v2 ~8 GB).
  bool input_grams = false;
};

struct CalibrationResult {
  int clips = 0;
  int windows = 0;  // 30 s windows encoded
  long tokens = 0;  // decoder positions whose K/V were measured
};

// Transcribes `audio_files` with the model at `model_path` on the CPU (greedy, temperature 0) and records,
// for every decoder layer and head, max |K| and max |V| over the self-attention caches and over the windows'
// cross-attention K/V. Writes a copy of the engine file with them to `out_path` (atomically; it may be the
// same path): tensors "decoder.blocks.N.attn.kv_amax" and "decoder.blocks.N.cross_attn.kv_amax", f32
// [2·n_head] (K heads, then V heads), replacing earlier ones. It also stores the mean |x| and mean x² of every
// column of the block norms' outputs ("<stack>.blocks.N.<norm>.output_stats", f32 [2, d]), which
// `wisp convert --weights int8|int4` uses to scale the layers those norms feed (docs/quantization.md).
// With options.input_grams, the layers' input Gram matrices too (above). Throws IoError, AudioError, ModelError,
// InvalidArgument (no files).
CalibrationResult calibrate_kv_cache(const std::string& model_path, const std::vector<std::string>& audio_files,
                                     const std::string& out_path, const CalibrateOptions& options = {});

}  // namespace wisp
