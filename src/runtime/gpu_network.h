// The GPU runner as the model layer's device backend (model::DeviceBackend): WhisperModel::load(path,
// make_gpu_backend) runs every window and decoding call of that model on the GPU. Full builds only (needs
// src/model); the CUDA-less build's version throws "built without CUDA".
#pragma once

#include <chrono>
#include <memory>

#include "model/whisper.h"
#include "runtime/gpu_whisper.h"

namespace wisp::runtime {

// Slots the backend reserves on the device, per transcription that may run at once: cross-attention K/V of
// up to `windows` windows alive at once (the transcriber holds the language-detection window and the current
// one) and `sequences` decoder caches (a prompt, a language-detection pass, the beams or samples of a batch
// and as many spare ones for reordering them).
//
// Transcriptions on several threads at once (model::WhisperModel::begin_transcription) have their decode
// steps and windows gathered into batched calls (runtime/call_gatherer.h); `patience` is how long a call
// waits for a transcription that is busy elsewhere before running without it.
struct GpuNetworkOptions {
  int windows = 3;
  int sequences = 20;
  int transcriptions = 1;
  std::chrono::microseconds patience{2000};
  GpuKvCache kv_cache = GpuKvCache::kF16;
  // decode_choose / decode_batch_choose answer on the device (false: from the logits, on the host).
  bool device_token_choice = true;
  // GpuWhisper::set_encoder_gelu.
  GpuWhisper::EncoderGelu encoder_gelu = GpuWhisper::EncoderGelu::kTanh;
};

// Uploads `model`'s weights to the current CUDA device. When the slots of `transcriptions` do not fit the free
// device memory, it halves `transcriptions` until they do (DeviceBackend::concurrency says how many it kept). Throws
// std::runtime_error (no device, CUDA errors, a build without CUDA) or std::invalid_argument (dimensions the kernels do
// not take).
std::unique_ptr<model::DeviceBackend> make_gpu_backend(const model::WhisperModel& model,
                                                       const GpuNetworkOptions& options = {});

}  // namespace wisp::runtime
