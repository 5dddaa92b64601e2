// The calibration's host backend (kv_calibration.cpp): a model::DeviceBackend that runs on the CPU through a
// second plain WhisperModel of the same file, so every model call goes the device route. It records the K/V
// maxima (calibration, tests) and can round the K/V rows as the GPU's quantised caches store them.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/whisper.h"
#include "wisp/calibrate.h"

namespace wisp {

// How the host backend rounds the K/V rows it sees: not at all, or as --kv-cache int8 (calibrated per-head
// scales from the engine file), int8-dynamic (per token and head) or fp8 (e4m3, calibrated scales or 1).
enum class KvRounding { kNone, kInt8, kInt8Dynamic, kFp8 };

std::unique_ptr<model::DeviceBackend> make_recording_backend(const std::string& model_path);
// x as an FP8 e4m3 value: rounded to 3 mantissa bits (nearest even; subnormals below 2^-6), saturated at
// ±448, as the GPU's __nv_cvt_float_to_fp8 with __NV_SATFINITE does.
float round_e4m3(float x);

// Throws InvalidArgument for kInt8 on an uncalibrated model.
std::unique_ptr<model::DeviceBackend> make_rounding_backend(const std::string& model_path, KvRounding rounding);

// calibrate_kv_cache over n_clips clips that `clip(i)` returns as 16 kHz samples (calibrate_files.cpp reads
// them from audio files; kept apart so that this file does not link the audio decoder).
CalibrationResult calibrate_kv_cache_on(const std::string& model_path, size_t n_clips,
                                        const std::function<std::vector<float>(size_t)>& clip,
                                        const std::string& out_path, const CalibrateOptions& options = {});

}  // namespace wisp
