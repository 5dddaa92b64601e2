// Calibration (`wisp calibrate`): the largest |K| and |V| of every decoder layer and head, measured while
// transcribing real audio, stored in the engine file for the int8 and FP8 K/V caches of the GPU; and the input
// statistics of the linear layers after the block norms, for activation-aware weight quantisation.
#pragma once

#include <string>
#include <vector>

namespace wisp {

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
// Throws IoError, AudioError, ModelError, InvalidArgument (no files).
CalibrationResult calibrate_kv_cache(const std::string& model_path, const std::vector<std::string>& audio_files,
                                     const std::string& out_path);

}  // namespace wisp
