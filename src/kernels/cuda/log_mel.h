// Whisper's log-mel spectrogram on the GPU: the CUDA twin of wisp::LogMel::compute (src/audio/mel.cpp), with
// the same semantics step by step:
//   1. the samples get `pad_samples` trailing zeros (length L = n + pad), then 200 values of numpy reflect
//      padding on each side (mirrored about the first and last samples, bouncing back and forth when L is
//      shorter than the padding; reflected indices that land in the zero padding read 0);
//   2. frames of 400 samples every 160 (n_frames = L / 160, the STFT's last partial frame dropped), times the
//      periodic Hann window (numpy's formula in double, rounded to float);
//   3. |R2C FFT|² in fp32 (cuFFT), the mel projection accumulated in double and rounded to float,
//      log10(max(v, 1e-10));
//   4. the floor at (global max − 8) and (v + 4) / 4, the maximum reduced on the device.
// Results match the CPU within fp32 FFT rounding (tests/kernels/cuda_log_mel_test.cpp).
//
// The filterbank comes from the caller (LogMel::filters on the host): the kernels library does not depend on
// the audio layer (FFTW).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/cuda/cuda_kernels.h"

namespace wisp::kernels::cuda {

inline constexpr int kLogMelNFft = 400;                               // 25 ms window at 16 kHz
inline constexpr int kLogMelHop = 160;                                // 10 ms hop
inline constexpr int kLogMelBins = kLogMelNFft / 2 + 1;               // 201 one-sided FFT bins
inline constexpr int kLogMelDefaultPad = 160;                         // faster-whisper's `padding` in transcribe
inline constexpr int kLogMelMaxMels = 1024;                           // init() refuses more
inline constexpr int64_t kLogMelMaxFrames = INT32_MAX / kLogMelNFft;  // 32-bit cuFFT plans: ~14.9 h of audio

// Owns everything a log-mel needs on one device: the cuFFT plans, the filterbank (its nonzero bands, packed),
// the window and a workspace sized for the largest input at init(), so compute() never allocates and never
// synchronises with the host. It should be capturable in a CUDA graph after one call outside the capture
// (cuFFT loads its kernels lazily): not verified.
//
// One call at a time: the workspace is shared by all calls, so calls on different streams must be ordered by
// the caller (or use one DeviceLogMel per stream). All memory lives on the device current at init(), which must
// be current for compute() and the destructor.
class DeviceLogMel {
 public:
  DeviceLogMel();
  ~DeviceLogMel();
  DeviceLogMel(const DeviceLogMel&) = delete;
  DeviceLogMel& operator=(const DeviceLogMel&) = delete;
  DeviceLogMel(DeviceLogMel&&) noexcept;
  DeviceLogMel& operator=(DeviceLogMel&&) noexcept;

  // n_mels in [1, kLogMelMaxMels]; filters: the filterbank on the host, as LogMel::filters(n_mels) returns it.
  // compute() will take up to max_samples samples (≥ 1) with up to max_pad_samples (≥ 0) of padding;
  // (max_samples + max_pad_samples) / 160 must lie in [1, kLogMelMaxFrames]. Allocates the device buffers
  // (3.2 KB per frame of the largest input for the frames and spectra, 0.64 KB + 4·n_mels bytes for
  // compute_host's chunks, plus cuFFT's work area) and plans
  // cuFFT (a ladder of batch sizes, halving from the largest input's frames until 64 or fewer).
  // kInvalidArgument for a bad argument, kOutOfMemory, or kCudaError (a CUDA or cuFFT call failed). A failed
  // init leaves the object not ready; init() on a ready object releases its old resources first.
  Status init(int n_mels, const float* filters /* host [n_mels, 201] */, int64_t max_samples,
              int max_pad_samples = kLogMelDefaultPad);
  bool ready() const;

  int n_mels() const;           // 0 when not ready
  int64_t max_samples() const;  // 0 when not ready
  int max_pad_samples() const;  // 0 when not ready
  size_t device_bytes() const;  // device memory held (buffers and the cuFFT work area)

  // Frames compute() writes for n_samples samples and pad_samples of padding: (n_samples + pad_samples) / 160.
  static int64_t n_frames(int64_t n_samples, int pad_samples = kLogMelDefaultPad);

  // out[m, t] = the log-mel of samples followed by pad_samples zeros, t < n_frames(n_samples, pad_samples),
  // on `stream` (4 launches: framing + window, cuFFT, power + mel + log10 + per-block maxima, floor + scale;
  // the FFT runs on the smallest planned batch that covers the frames, so under twice the frames, or 64).
  // kInvalidArgument when not ready, for null pointers, n_samples ≤ 0 or > max_samples(), pad_samples < 0 or
  // > max_pad_samples(), or no complete frame; kCudaError when a launch or cuFFT fails. out must not overlap
  // samples.
  Status compute(const float* samples /* [n_samples] device, 16 kHz */, int64_t n_samples,
                 float* out /* [n_mels, n_frames] device */, cudaStream_t stream, int pad_samples = kLogMelDefaultPad);

  // The log-mel of a whole recording from the host to the host: as compute() (the same values), for any
  // n_samples up to kLogMelMaxFrames·160, in chunks of as many frames as init's largest input (each chunk's
  // samples uploaded, its log-mel downloaded, the floor applied on the host once the global maximum is known),
  // so the device memory stays what init() allocated. Synchronises with `stream`. kInvalidArgument when not
  // ready, for null pointers, n_samples ≤ 0, a bad pad_samples or no complete frame; kCudaError otherwise.
  Status compute_host(const float* samples /* host [n_samples], 16 kHz */, int64_t n_samples,
                      float* out /* host [n_mels, n_frames] */, cudaStream_t stream,
                      int pad_samples = kLogMelDefaultPad);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace wisp::kernels::cuda
