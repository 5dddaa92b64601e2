// Kernels-only builds have no engine-file reader (src/format needs nlohmann-json and the tokenizer).
#include <stdexcept>

#include "runtime/gpu_whisper.h"

namespace wisp::runtime {

TensorSource open_engine_file(const std::string& path, GpuDims&) {
  throw std::runtime_error("cannot read '" + path + "': this build has no engine-file reader (WISP_KERNELS_ONLY)");
}

}  // namespace wisp::runtime
