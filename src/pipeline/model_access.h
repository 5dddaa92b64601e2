// Pipeline-internal ways to make a wisp::Model: around a network loaded with a backend of our choosing (the
// KV-cache calibration's recording backend).
#pragma once

#include <memory>

#include "model/whisper.h"
#include "wisp/model.h"

namespace wisp {

struct ModelAccess {
  static std::unique_ptr<Model> wrap(std::shared_ptr<const model::WhisperModel> net);
};

}  // namespace wisp
