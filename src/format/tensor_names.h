// Canonical tensor names inside an engine file (openai-style, with fused projections).
// Importers produce them; the model reads them. docs/engine-format.md lists every name and shape.
#pragma once

#include <string>

namespace wisp::format::names {

// "encoder.blocks.3.attn.qkv.weight" = block("encoder", 3, "attn.qkv.weight")
inline std::string block(const std::string& stack, int layer, const std::string& leaf) {
  return stack + ".blocks." + std::to_string(layer) + "." + leaf;
}

}  // namespace wisp::format::names
