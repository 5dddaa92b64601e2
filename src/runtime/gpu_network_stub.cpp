// CPU-only full builds: no GPU backend can be made.
#include <stdexcept>

#include "runtime/gpu_network.h"

namespace wisp::runtime {

std::unique_ptr<model::DeviceBackend> make_gpu_backend(const model::WhisperModel&, const GpuNetworkOptions&) {
  throw std::runtime_error("this wisp was built without CUDA");
}

}  // namespace wisp::runtime
