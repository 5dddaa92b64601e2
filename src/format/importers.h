// Importers: CTranslate2 directories and Hugging Face safetensors directories into engine files.
#pragma once

#include <string>

#include "format/engine_file.h"

namespace wisp::format {

enum class WeightType { kKeep, kF16, kF32 };

struct ConvertOptions {
  WeightType weights = WeightType::kKeep;  // matrices keep the source dtype unless asked otherwise
  std::string name;                        // model name recorded in the file ("" = from the source)
};

enum class SourceKind { kCTranslate2, kSafetensors, kEngine, kUnknown };
SourceKind detect_source(const std::string& path);

// Fills `writer` from the source. Throws IoError / ModelError with the offending file named.
void import_ctranslate2(const std::string& dir, const ConvertOptions& opts, EngineWriter& writer);
void import_safetensors(const std::string& dir, const ConvertOptions& opts, EngineWriter& writer);

// Detects the source layout, imports, and writes `dst` atomically.
void convert_model(const std::string& src, const std::string& dst, const ConvertOptions& opts);

}  // namespace wisp::format
