// The log-mel spectrogram (log_mel.h). Why this shape: the FFT is cuFFT's batched R2C over all frames at once
// (one plan per power-of-two fraction of the largest input, so a short input does not pay for 30 s of FFTs
// and no plan is made per call); around it, three memory-bound kernels:
//   frame_window  builds the [frames, 400] windowed frames from the samples, doing the reflect padding by
//                 index arithmetic (no padded copy of the signal);
//   mel_log       one block per 16 frames: the power spectra of the tile go to shared memory, then each
//                 thread projects (mel, frame) pairs over the filter's nonzero band only (about 2 bins per
//                 frequency bin in all, not n_mels) and writes out[mel, frame], 16 frames side by side so the
//                 stores coalesce; the block's maximum goes to a per-block slot;
//   normalise     every block reduces the per-block maxima itself (a few hundred floats for 30 s, read from
//                 L2) and applies the floor and scale, so the global maximum needs no extra launch, no atomics
//                 and no state that must be reset between calls.
// The mel sum runs in double, as on the CPU: products of two floats are exact in double, so the sum does not
// depend on its order, and log10 is evaluated in double and rounded once.
#include <cufft.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/log_mel.h"

namespace wisp::kernels::cuda {

using detail::block_max;
using detail::grid_for;
using detail::launch_status;

namespace {

constexpr int kThreads = 256;
constexpr int kTileFrames = 16;            // frames per mel_log block: 188 blocks for 30 s, 64-byte runs of output
constexpr int kNormaliseMaxBlocks = 1024;  // each normalise block re-reads the per-block maxima
constexpr int kSmallestPlan = 64;          // the plan ladder stops at this batch

// numpy's reflect padding of a length-`length` (≥ 2) signal at index i outside [0, length): the triangle
// wave of mel.cpp's reflect_index.
__device__ __forceinline__ int64_t reflect_index(int64_t i, int64_t length) {
  const int64_t period = 2 * (length - 1);
  int64_t r = i % period;
  if (r < 0) r += period;
  return r >= length ? period - r : r;
}

// frames[t, i] = padded[(frame0 + t)·160 + i] · window[i], padded being the signal [n] + zeros up to `length`,
// reflected 200 samples out on both sides. `samples` holds the signal's samples [first, first + count) (all of
// them, or the ones a chunk of frames reads).
__global__ void frame_window_kernel(const float* __restrict__ samples /* [count] */, int64_t first, int64_t n,
                                    int64_t length, const float* __restrict__ window /* [400] */,
                                    float* __restrict__ frames /* [n_frames, 400] */, int64_t frame0,
                                    int64_t n_frames) {
  const int64_t total = n_frames * kLogMelNFft;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = e / kLogMelNFft;
    const int i = static_cast<int>(e - t * kLogMelNFft);
    int64_t j = (frame0 + t) * kLogMelHop + i - kLogMelNFft / 2;  // index into the zero-padded signal
    if (j < 0 || j >= length) j = length == 1 ? 0 : reflect_index(j, length);
    const float x = j < n ? samples[j - first] : 0.0f;
    frames[e] = x * window[i];
  }
}

// A filter's nonzero band: bins [begin, begin + len) with weights packed[offset, offset + len).
struct Band {
  int begin, len, offset, pad_;
};

// Power spectra of frames [t0, t0 + 16) → mel projection → log10(max(v, 1e-10)) → out; block maximum →
// block_max_out[blockIdx.x].
__global__ void __launch_bounds__(kThreads)
    mel_log_kernel(const float2* __restrict__ spectrum /* [n_frames, 201] */, int n_frames,
                   const Band* __restrict__ bands /* [n_mels] */, const float* __restrict__ packed /* [Σ len] */,
                   int n_mels, float* __restrict__ out /* [n_mels, n_frames] */,
                   float* __restrict__ block_max_out /* [gridDim.x] */) {
  // [16, 201]; 201 ≡ 9 (mod 32), so the 16 frames a half-warp reads sit on distinct banks.
  __shared__ float power[kTileFrames * kLogMelBins];
  __shared__ float reduce[detail::kWarp];
  const int t0 = blockIdx.x * kTileFrames;
  const int tile = min(kTileFrames, n_frames - t0);
  const float2* src = spectrum + static_cast<int64_t>(t0) * kLogMelBins;
  for (int e = threadIdx.x; e < tile * kLogMelBins; e += blockDim.x) {
    const float2 c = src[e];
    power[e] = c.x * c.x + c.y * c.y;
  }
  __syncthreads();

  float local_max = -INFINITY;
  for (int e = threadIdx.x; e < n_mels * kTileFrames; e += blockDim.x) {
    const int m = e / kTileFrames, t = e % kTileFrames;
    if (t >= tile) continue;
    const Band b = bands[m];
    const float* p = power + t * kLogMelBins + b.begin;
    const float* w = packed + b.offset;
    double acc = 0.0;
    for (int k = 0; k < b.len; ++k) acc += static_cast<double>(__ldg(w + k)) * p[k];
    const float v = static_cast<float>(log10(static_cast<double>(fmaxf(static_cast<float>(acc), 1e-10f))));
    out[static_cast<int64_t>(m) * n_frames + t0 + t] = v;
    local_max = fmaxf(local_max, v);
  }
  local_max = block_max(local_max, reduce);
  if (threadIdx.x == 0) block_max_out[blockIdx.x] = local_max;
}

// out[e] = (max(out[e], max_log − 8) + 4) / 4, max_log being the maximum of block_max [n_blocks].
__global__ void __launch_bounds__(kThreads)
    normalise_kernel(float* __restrict__ out /* [total] */, int64_t total,
                     const float* __restrict__ block_max_in /* [n_blocks] */, int n_blocks) {
  __shared__ float reduce[detail::kWarp];
  float m = -INFINITY;
  for (int i = threadIdx.x; i < n_blocks; i += blockDim.x) m = fmaxf(m, block_max_in[i]);
  const float floor_log = block_max(m, reduce) - 8.0f;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[e] = (fmaxf(out[e], floor_log) + 4.0f) / 4.0f;
  }
}

Status cuda_status(cudaError_t e) {
  if (e == cudaSuccess) return Status::kOk;
  cudaGetLastError();  // clear the (non-sticky) error so that later launches do not report it
  return e == cudaErrorMemoryAllocation ? Status::kOutOfMemory : Status::kCudaError;
}

Status cufft_status(cufftResult r) {
  if (r == CUFFT_SUCCESS) return Status::kOk;
  return r == CUFFT_ALLOC_FAILED ? Status::kOutOfMemory : Status::kCudaError;
}

}  // namespace

struct DeviceLogMel::Impl {
  int n_mels = 0;
  int64_t max_samples = 0;
  int max_pad = 0;
  int64_t max_frames = 0;
  size_t bytes = 0;

  float* window = nullptr;     // [400]
  Band* bands = nullptr;       // [n_mels]
  float* packed = nullptr;     // [Σ band lengths] the filters' nonzero bands
  float* frames = nullptr;     // [max_frames, 400] windowed frames (cuFFT input)
  float2* spectrum = nullptr;  // [max_frames, 201] (cuFFT output)
  float* block_max = nullptr;  // [ceil(max_frames / 16)] per mel_log block
  float* staging = nullptr;    // [max_frames·160 + 401] compute_host: the samples of one chunk of frames
  float* chunk_out = nullptr;  // [n_mels, max_frames] compute_host: the log-mel of one chunk
  void* fft_work = nullptr;    // cuFFT work area, shared by the plans (one call at a time)
  // (batch, plan), batches decreasing from max_frames by halves down to ≤ kSmallestPlan.
  std::vector<std::pair<int64_t, cufftHandle>> plans;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    for (auto& p : plans) cufftDestroy(p.second);
    for (void* q : {static_cast<void*>(window), static_cast<void*>(bands), static_cast<void*>(packed),
                    static_cast<void*>(frames), static_cast<void*>(spectrum), static_cast<void*>(block_max),
                    static_cast<void*>(staging), static_cast<void*>(chunk_out), fft_work}) {
      if (q) cudaFree(q);
    }
  }

  // spectrum ← R2C FFT of the first `count` frames, on the smallest planned batch that covers them (the last
  // plan with batch ≥ count; the first always does).
  Status transform(int64_t count, cudaStream_t stream) {
    size_t pick = 0;
    while (pick + 1 < plans.size() && plans[pick + 1].first >= count) ++pick;
    const cufftHandle plan = plans[pick].second;
    if (cufftSetStream(plan, stream) != CUFFT_SUCCESS) return Status::kCudaError;
    if (cufftExecR2C(plan, reinterpret_cast<cufftReal*>(frames), reinterpret_cast<cufftComplex*>(spectrum)) !=
        CUFFT_SUCCESS) {
      return Status::kCudaError;
    }
    return Status::kOk;
  }

  template <class T>
  Status alloc(T** p, size_t count) {
    const size_t n = std::max<size_t>(count, 1) * sizeof(T);
    const Status s = cuda_status(cudaMalloc(reinterpret_cast<void**>(p), n));
    if (s == Status::kOk) bytes += n;
    return s;
  }
};

DeviceLogMel::DeviceLogMel() = default;
DeviceLogMel::~DeviceLogMel() = default;
DeviceLogMel::DeviceLogMel(DeviceLogMel&&) noexcept = default;
DeviceLogMel& DeviceLogMel::operator=(DeviceLogMel&&) noexcept = default;

bool DeviceLogMel::ready() const { return impl_ != nullptr; }
int DeviceLogMel::n_mels() const { return impl_ ? impl_->n_mels : 0; }
int64_t DeviceLogMel::max_samples() const { return impl_ ? impl_->max_samples : 0; }
int DeviceLogMel::max_pad_samples() const { return impl_ ? impl_->max_pad : 0; }
size_t DeviceLogMel::device_bytes() const { return impl_ ? impl_->bytes : 0; }

int64_t DeviceLogMel::n_frames(int64_t n_samples, int pad_samples) {
  return (std::max<int64_t>(n_samples, 0) + std::max(pad_samples, 0)) / kLogMelHop;
}

Status DeviceLogMel::init(int n_mels, const float* filters /* host [n_mels, 201] */, int64_t max_samples,
                          int max_pad_samples) {
  impl_.reset();
  if (n_mels <= 0 || n_mels > kLogMelMaxMels || !filters || max_samples <= 0 || max_pad_samples < 0) {
    return Status::kInvalidArgument;
  }
  if (max_samples > kLogMelMaxFrames * kLogMelHop) return Status::kInvalidArgument;  // before the sum overflows
  const int64_t max_frames = n_frames(max_samples, max_pad_samples);
  if (max_frames < 1 || max_frames > kLogMelMaxFrames) return Status::kInvalidArgument;

  auto impl = std::make_unique<Impl>();
  impl->n_mels = n_mels;
  impl->max_samples = max_samples;
  impl->max_pad = max_pad_samples;
  impl->max_frames = max_frames;

  // The filters' nonzero bands, as LogMel's constructor finds them: first nonzero bin to one past the last.
  std::vector<Band> bands(static_cast<size_t>(n_mels));
  std::vector<float> packed;
  for (int m = 0; m < n_mels; ++m) {
    const float* row = filters + static_cast<size_t>(m) * kLogMelBins;
    int begin = 0;
    while (begin < kLogMelBins && row[begin] == 0.0f) ++begin;
    int end = kLogMelBins;
    while (end > begin && row[end - 1] == 0.0f) --end;
    bands[static_cast<size_t>(m)] = {begin, end - begin, static_cast<int>(packed.size()), 0};
    packed.insert(packed.end(), row + begin, row + end);
  }
  // np.hanning(401)[:-1] in double, rounded to float: bit-identical to mel.cpp's window.
  std::vector<float> window(kLogMelNFft);
  for (int i = 0; i < kLogMelNFft; ++i) {
    const double x = 2.0 * i - kLogMelNFft;
    window[static_cast<size_t>(i)] = static_cast<float>(0.5 + 0.5 * std::cos(M_PI * x / kLogMelNFft));
  }

  const size_t frames_n = static_cast<size_t>(max_frames);
  const size_t n_blocks = (frames_n + kTileFrames - 1) / kTileFrames;
  Status s;
  if ((s = impl->alloc(&impl->window, kLogMelNFft)) != Status::kOk) return s;
  if ((s = impl->alloc(&impl->bands, bands.size())) != Status::kOk) return s;
  if ((s = impl->alloc(&impl->packed, packed.size())) != Status::kOk) return s;
  if ((s = impl->alloc(&impl->frames, frames_n * kLogMelNFft)) != Status::kOk) return s;
  if ((s = impl->alloc(&impl->spectrum, frames_n * kLogMelBins)) != Status::kOk) return s;
  if ((s = impl->alloc(&impl->block_max, n_blocks)) != Status::kOk) return s;
  if ((s = impl->alloc(&impl->staging, frames_n * kLogMelHop + kLogMelNFft + 1)) != Status::kOk) return s;
  if ((s = impl->alloc(&impl->chunk_out, frames_n * static_cast<size_t>(n_mels))) != Status::kOk) return s;
  if ((s = cuda_status(cudaMemcpy(impl->window, window.data(), window.size() * sizeof(float),
                                  cudaMemcpyHostToDevice))) != Status::kOk) {
    return s;
  }
  if ((s = cuda_status(cudaMemcpy(impl->bands, bands.data(), bands.size() * sizeof(Band), cudaMemcpyHostToDevice))) !=
      Status::kOk) {
    return s;
  }
  if (!packed.empty() && (s = cuda_status(cudaMemcpy(impl->packed, packed.data(), packed.size() * sizeof(float),
                                                     cudaMemcpyHostToDevice))) != Status::kOk) {
    return s;
  }
  // A plan's batch may exceed a call's frames: the extra frames are transformed and ignored. Zeroed once so
  // that they are never uninitialised memory.
  if ((s = cuda_status(cudaMemset(impl->frames, 0, frames_n * kLogMelNFft * sizeof(float)))) != Status::kOk) {
    return s;
  }

  // The plan ladder: batches max_frames, ⌈max_frames / 2⌉, ... down to ≤ kSmallestPlan frames; a call runs the
  // smallest plan that covers its frames, so it transforms fewer than twice its frames (or 64). The plans
  // share one work area (cuFFT's auto-allocation off).
  size_t work_bytes = 0;
  for (int64_t batch = max_frames;; batch = (batch + 1) / 2) {
    cufftHandle h;
    if ((s = cufft_status(cufftCreate(&h))) != Status::kOk) return s;
    impl->plans.emplace_back(batch, h);
    if ((s = cufft_status(cufftSetAutoAllocation(h, 0))) != Status::kOk) return s;
    int n[1] = {kLogMelNFft};
    int inembed[1] = {kLogMelNFft};
    int onembed[1] = {kLogMelBins};
    size_t ws = 0;
    if ((s = cufft_status(cufftMakePlanMany(h, 1, n, inembed, 1, kLogMelNFft, onembed, 1, kLogMelBins, CUFFT_R2C,
                                            static_cast<int>(batch), &ws))) != Status::kOk) {
      return s;
    }
    work_bytes = std::max(work_bytes, ws);
    if (batch <= kSmallestPlan) break;
  }
  if (work_bytes > 0) {
    if ((s = cuda_status(cudaMalloc(&impl->fft_work, work_bytes))) != Status::kOk) return s;
    impl->bytes += work_bytes;
    for (auto& p : impl->plans) {
      if ((s = cufft_status(cufftSetWorkArea(p.second, impl->fft_work))) != Status::kOk) return s;
    }
  }
  impl_ = std::move(impl);
  return Status::kOk;
}

Status DeviceLogMel::compute(const float* samples /* [n_samples] device */, int64_t n_samples,
                             float* out /* [n_mels, n_frames] device */, cudaStream_t stream, int pad_samples) {
  if (!impl_ || !samples || !out) return Status::kInvalidArgument;
  Impl& im = *impl_;
  if (n_samples <= 0 || n_samples > im.max_samples || pad_samples < 0 || pad_samples > im.max_pad) {
    return Status::kInvalidArgument;
  }
  const int64_t frames = n_frames(n_samples, pad_samples);
  if (frames <= 0) return Status::kInvalidArgument;
  const int64_t length = n_samples + pad_samples;

  frame_window_kernel<<<grid_for(frames * kLogMelNFft, kThreads), kThreads, 0, stream>>>(
      samples, 0, n_samples, length, im.window, im.frames, 0, frames);
  if (const Status s = launch_status(); s != Status::kOk) return s;
  if (const Status s = im.transform(frames, stream); s != Status::kOk) return s;

  const int n_blocks = static_cast<int>((frames + kTileFrames - 1) / kTileFrames);
  mel_log_kernel<<<n_blocks, kThreads, 0, stream>>>(im.spectrum, static_cast<int>(frames), im.bands, im.packed,
                                                    im.n_mels, out, im.block_max);
  if (const Status s = launch_status(); s != Status::kOk) return s;

  const int64_t total = frames * im.n_mels;
  normalise_kernel<<<grid_for(total, kThreads, kNormaliseMaxBlocks), kThreads, 0, stream>>>(out, total, im.block_max,
                                                                                            n_blocks);
  return launch_status();
}

Status DeviceLogMel::compute_host(const float* samples /* host [n_samples] */, int64_t n_samples,
                                  float* out /* host [n_mels, n_frames] */, cudaStream_t stream, int pad_samples) {
  if (!impl_ || !samples || !out) return Status::kInvalidArgument;
  Impl& im = *impl_;
  if (n_samples <= 0 || n_samples > kLogMelMaxFrames * kLogMelHop || pad_samples < 0 || pad_samples > im.max_pad) {
    return Status::kInvalidArgument;
  }
  const int64_t total = n_frames(n_samples, pad_samples);
  if (total <= 0 || total > kLogMelMaxFrames) return Status::kInvalidArgument;
  const int64_t length = n_samples + pad_samples;
  // Chunks of frames as long as init's input: their samples (with the 200 on each side that the frames
  // reach) go to `staging`, their log-mel to `chunk_out` and then to the host; the floor needs the maximum
  // of all of them, so it is applied on the host at the end.
  const int64_t chunk = im.max_frames;
  float global_max = -INFINITY;
  std::vector<float> block_max_host;
  for (int64_t f0 = 0; f0 < total; f0 += chunk) {
    const int64_t frames = std::min(chunk, total - f0);
    // The samples the chunk's frames read: 200 before its first frame's centre to 200 after its last one's.
    // Reflected indices land within 200 samples of an end of the signal, so inside the first or the last
    // chunk's own range (a signal short enough for the reflection to bounce has a single chunk: all of it).
    const int64_t lo = std::max<int64_t>(0, f0 * kLogMelHop - kLogMelNFft / 2);
    const int64_t hi = std::max(lo, std::min(n_samples, (f0 + frames - 1) * kLogMelHop + kLogMelNFft / 2 + 1));
    Status s = cuda_status(
        cudaMemcpyAsync(im.staging, samples + lo, size_t(hi - lo) * sizeof(float), cudaMemcpyHostToDevice, stream));
    if (s != Status::kOk) return s;
    frame_window_kernel<<<grid_for(frames * kLogMelNFft, kThreads), kThreads, 0, stream>>>(
        im.staging, lo, n_samples, length, im.window, im.frames, f0, frames);
    if ((s = launch_status()) != Status::kOk) return s;
    if ((s = im.transform(frames, stream)) != Status::kOk) return s;
    const int n_blocks = static_cast<int>((frames + kTileFrames - 1) / kTileFrames);
    mel_log_kernel<<<n_blocks, kThreads, 0, stream>>>(im.spectrum, static_cast<int>(frames), im.bands, im.packed,
                                                      im.n_mels, im.chunk_out, im.block_max);
    if ((s = launch_status()) != Status::kOk) return s;
    // chunk_out [n_mels, frames] → out[:, f0 : f0 + frames] (row pitch: all frames)
    s = cuda_status(cudaMemcpy2DAsync(out + f0, size_t(total) * sizeof(float), im.chunk_out,
                                      size_t(frames) * sizeof(float), size_t(frames) * sizeof(float), size_t(im.n_mels),
                                      cudaMemcpyDeviceToHost, stream));
    if (s != Status::kOk) return s;
    block_max_host.resize(size_t(n_blocks));
    s = cuda_status(cudaMemcpyAsync(block_max_host.data(), im.block_max, size_t(n_blocks) * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream));
    if (s != Status::kOk) return s;
    if ((s = cuda_status(cudaStreamSynchronize(stream))) != Status::kOk) return s;
    for (float m : block_max_host) global_max = std::max(global_max, m);
  }
  // The floor and scale of normalise_kernel, in the same float operations.
  const float floor_log = global_max - 8.0f;
  for (int64_t e = 0; e < total * im.n_mels; ++e) out[e] = (std::max(out[e], floor_log) + 4.0f) / 4.0f;
  return Status::kOk;
}

}  // namespace wisp::kernels::cuda
