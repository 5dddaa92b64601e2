// An engine file as the GPU runner's TensorSource (full builds only: needs src/format).
#include <memory>

#include "format/engine_file.h"
#include "runtime/gpu_whisper.h"

namespace wisp::runtime {

TensorSource open_engine_file(const std::string& path, GpuDims& dims) {
  auto file = std::make_shared<format::EngineFile>(format::EngineFile::open(path));
  const auto& m = file->metadata().dims;
  dims.n_mels = m.n_mels, dims.n_vocab = m.n_vocab, dims.n_audio_ctx = m.n_audio_ctx;
  dims.n_audio_state = m.n_audio_state, dims.n_audio_head = m.n_audio_head, dims.n_audio_layer = m.n_audio_layer;
  dims.n_text_ctx = m.n_text_ctx, dims.n_text_state = m.n_text_state, dims.n_text_head = m.n_text_head;
  dims.n_text_layer = m.n_text_layer;
  return [file](const std::string& name) { return file->tensor(name); };
}

}  // namespace wisp::runtime
