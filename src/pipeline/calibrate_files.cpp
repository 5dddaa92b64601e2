// calibrate_kv_cache (wisp/calibrate.h) over audio files: the one calibration entry point that decodes audio
// (FFmpeg), in its own translation unit like transcribe_file.cpp, so that programs linking the host backend of
// kv_calibration.cpp (the GPU transcript check) do not link the decoder.
#include <string>
#include <vector>

#include "pipeline/kv_calibration.h"
#include "wisp/audio.h"
#include "wisp/calibrate.h"

namespace wisp {

CalibrationResult calibrate_kv_cache(const std::string& model_path, const std::vector<std::string>& audio_files,
                                     const std::string& out_path, const CalibrateOptions& options) {
  return calibrate_kv_cache_on(
      model_path, audio_files.size(), [&](size_t i) { return load_audio(audio_files[i]); }, out_path, options);
}

}  // namespace wisp
