// Model::transcribe_file: the one pipeline entry point that decodes audio files (FFmpeg). Kept in its own
// translation unit so that programs transcribing samples they already have (the GPU transcript check
// carried to a machine without FFmpeg) do not link the decoder.
#include <vector>

#include "wisp/audio.h"
#include "wisp/model.h"

namespace wisp {

Transcript Model::transcribe_file(const std::string& path, const TranscribeOptions& options) const {
  const std::vector<float> samples = load_audio(path);
  return transcribe(samples, options);
}

}  // namespace wisp
