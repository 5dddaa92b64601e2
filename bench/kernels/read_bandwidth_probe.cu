// The card's read-bandwidth ceiling for the decode step's largest reader: how fast a plain kernel streams one
// batch-32 layer's cross K/V (245,760,000 bytes of fp16, 122,880,000 of one-byte codes) and 1 GiB from HBM, with
// four 16-byte loads in flight a thread, several grid shapes, and a device-to-device copy for comparison.
// Development tool, not built by CMake: on the GPU machine
//   nvcc -O3 -arch=sm_90 bench/kernels/read_bandwidth_probe.cu -o /tmp/read_bw && /tmp/read_bw
// (docs/cuda.md "Seventeenth session"; bench/results/read_bandwidth_h200_session17.txt).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

// Reads n 16-byte vectors grid-stride, kUnroll loads issued before any is used; folds them so that none is dead.
template <int kUnroll>
__global__ void read_kernel(const uint4* __restrict__ p, size_t n, unsigned* out) {
  unsigned acc = 0;
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (; i + (kUnroll - 1) * stride < n; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = __ldcs(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *out = acc;  // never true for the memset input; keeps the loads
}

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  for (const size_t bytes : {size_t{245760000}, size_t{122880000}, size_t{1} << 30}) {
    const int copies = bytes < (size_t{1} << 30) ? 4 : 1;  // rotated so that no call reads from L2
    uint4* buf = nullptr;
    unsigned* out = nullptr;
    if (cudaMalloc(&buf, bytes * copies) != cudaSuccess || cudaMalloc(&out, 4) != cudaSuccess) return 1;
    cudaMemset(buf, 1, bytes * copies);
    const size_t n = bytes / 16;
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (const int threads : {256, 512}) {
      for (const int per_sm : {2, 4, 8}) {
        const int blocks = sms * per_sm * (512 / threads);
        for (int w = 0; w < 3; ++w) read_kernel<4><<<blocks, threads>>>(buf, n, out);
        const int iters = 20;
        cudaEventRecord(a);
        for (int it = 0; it < iters; ++it) read_kernel<4><<<blocks, threads>>>(buf + (it % copies) * n, n, out);
        cudaEventRecord(b);
        cudaEventSynchronize(b);
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        ms /= iters;
        std::printf("read %zu MB threads %d blocks %d: %.1f us, %.2f TB/s\n", bytes >> 20, threads, blocks, ms * 1e3,
                    bytes / (ms * 1e-3) / 1e12);
      }
    }
    if (copies >= 2) {
      cudaEventRecord(a);
      for (int it = 0; it < 10; ++it) {
        cudaMemcpyAsync(buf + ((it + 1) % copies) * n, buf + (it % copies) * n, bytes, cudaMemcpyDeviceToDevice);
      }
      cudaEventRecord(b);
      cudaEventSynchronize(b);
      float ms = 0;
      cudaEventElapsedTime(&ms, a, b);
      ms /= 10;
      std::printf("copy %zu MB: %.1f us, %.2f TB/s (read+write)\n", bytes >> 20, ms * 1e3,
                  2.0 * bytes / (ms * 1e-3) / 1e12);
    }
    cudaFree(buf);
    cudaFree(out);
  }
  const cudaError_t e = cudaGetLastError();
  std::printf("err: %s\n", cudaGetErrorString(e));
  return e == cudaSuccess ? 0 : 1;
}
