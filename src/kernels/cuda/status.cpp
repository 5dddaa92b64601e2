#include <cuda_runtime_api.h>

#include <atomic>

#include "kernels/cuda/cuda_kernels.h"

namespace wisp::kernels::cuda {

const char* status_name(Status s) {
  switch (s) {
    case Status::kOk:
      return "ok";
    case Status::kInvalidArgument:
      return "invalid argument";
    case Status::kNotSupported:
      return "not supported";
    case Status::kCudaError:
      return "CUDA error";
    case Status::kCublasError:
      return "cuBLAS error";
    case Status::kOutOfMemory:
      return "out of memory";
  }
  return "unknown status";
}

bool device_available() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it so later calls do not report it
    return false;
  }
  return n > 0;
}

namespace {
std::atomic<bool> g_programmatic_launch{true};
}  // namespace

void set_programmatic_launch(bool on) { g_programmatic_launch.store(on, std::memory_order_relaxed); }
bool programmatic_launch() { return g_programmatic_launch.load(std::memory_order_relaxed); }

}  // namespace wisp::kernels::cuda
