// Importers: CTranslate2 directories, Hugging Face safetensors directories and engine files into engine files.
#pragma once

#include <string>
#include <vector>

#include "format/engine_file.h"

namespace wisp::format {

// kF16/kF32 convert every tensor; kInt8/kInt4 quantise the linear layers of the blocks and keep the rest as
// the source stores it (docs/quantization.md).
enum class WeightType { kKeep, kF16, kF32, kInt8, kInt4 };

struct ConvertOptions {
  WeightType weights = WeightType::kKeep;  // matrices keep the source dtype unless asked otherwise
  int group_size = 64;                     // kInt4: inputs per scale, 64 or 128
  std::string name;                        // model name recorded in the file ("" = from the source)
  // kInt8 / kInt4 from an engine file with calibrated norm statistics (`wisp calibrate`): scale the layers
  // after the block norms by their inputs before rounding (ops/column_scaling.h); false: plain rounding. Off by
  // default: on the dev set it helped int8 and int4 G128 and hurt int4 G64 (docs/quantization.md).
  bool activation_scaling = false;
  // kInt8 / kInt4: block matrices whose tensor name matches one of these shell patterns (fnmatch, e.g.
  // "decoder.blocks.*.mlp.*") keep their float type: a mixed-precision file (docs/quantization.md).
  std::vector<std::string> keep_float;
  // kInt8 / kInt4 from an engine file with calibrated input Gram matrices (`wisp calibrate --input-gram`): choose
  // the codes of every block linear layer that has one by GPTQ (ops::gptq_int8 / gptq_int4) instead of plain
  // rounding. Not with activation_scaling.
  bool gptq = false;
};

enum class SourceKind { kCTranslate2, kSafetensors, kEngine, kUnknown };
SourceKind detect_source(const std::string& path);

// Fills `writer` from the source. Throws IoError / ModelError with the offending file named.
void import_ctranslate2(const std::string& dir, const ConvertOptions& opts, EngineWriter& writer);
void import_safetensors(const std::string& dir, const ConvertOptions& opts, EngineWriter& writer);
// Re-encodes the float weights of an engine file (e.g. f16 → int8). A quantised source is refused
// (InvalidArgument): quantising its dequantised weights again would add a second rounding.
void import_engine(const std::string& path, const ConvertOptions& opts, EngineWriter& writer);

// Detects the source layout, imports, and writes `dst` atomically.
void convert_model(const std::string& src, const std::string& dst, const ConvertOptions& opts);

}  // namespace wisp::format
