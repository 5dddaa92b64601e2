// Model conversion into the wisp engine file format.
#pragma once

#include <string>
#include <vector>

namespace wisp {

struct ConvertOptions {
  // Matrix storage: keep (the source's), f16 (or fp16), f32 (or fp32), or int8 / int4: the linear layers of
  // the encoder and decoder blocks weight-only quantised, everything else kept (docs/quantization.md).
  std::string weights = "keep";
  int group_size = 0;  // int4: inputs per scale, 64 or 128 (0: 64); any other value is refused
  std::string name;    // model name recorded in the file
  // int8 / int4 from an engine file that `wisp calibrate` measured: scale the linear layers after the block
  // norms by their calibrated inputs before rounding (docs/quantization.md, "Activation-aware scaling", for
  // when it helps); false (the default): plain rounding.
  bool activation_scaling = false;
  // int8 / int4: block matrices whose tensor name matches one of these shell patterns (fnmatch, e.g.
  // "decoder.blocks.*.mlp.*") keep their float type (a mixed-precision file; docs/quantization.md).
  std::vector<std::string> keep_float;
  // int8 / int4 from an engine file whose layers' input Gram matrices `wisp calibrate --input-gram` measured:
  // choose the codes by GPTQ (each input's rounding error carried into the inputs not yet rounded) instead of plain
  // rounding (docs/quantization.md, "GPTQ"). Not together with activation_scaling.
  bool gptq = false;
};

// Converts a CTranslate2 directory (model.bin), a Hugging Face directory (model.safetensors) or an f16/f32
// engine file (to quantise it) into an engine file at `dst`, written atomically. Throws IoError, ModelError
// or InvalidArgument (an unknown weight type, a group size other than 64 or 128 or given without int4, a
// quantised engine file as the source, activation scaling without int8/int4 or without a calibrated .wisp,
// keep_float without int8/int4 or with a pattern that names no block matrix, gptq without int8/int4, without a
// .wisp calibrated with --input-gram, or with activation scaling).
void convert(const std::string& src, const std::string& dst, const ConvertOptions& options = {});

}  // namespace wisp
