// Model conversion into the wisp engine file format.
#pragma once

#include <string>

namespace wisp {

struct ConvertOptions {
  std::string weights = "keep";  // matrix storage: keep (the source's), f16 or f32
  std::string name;              // model name recorded in the file
};

// Converts a CTranslate2 directory (model.bin) or a Hugging Face directory (model.safetensors) into an
// engine file at `dst`, written atomically. Throws IoError, ModelError or InvalidArgument.
void convert(const std::string& src, const std::string& dst, const ConvertOptions& options = {});

}  // namespace wisp
