// The calibration's recording backend (kv_calibration.cpp), for tests: a model::DeviceBackend that runs on the
// CPU through a second plain WhisperModel of the same file, so every model call goes the device route.
#pragma once

#include <memory>
#include <string>

#include "model/whisper.h"

namespace wisp {

std::unique_ptr<model::DeviceBackend> make_recording_backend(const std::string& model_path);

}  // namespace wisp
