// Canonical tensor names inside an engine file (openai-style, with fused projections).
// Importers produce them; the model reads them. docs/engine-format.md lists every name and shape.
#pragma once

#include <string>

namespace wisp::format::names {

// "encoder.blocks.3.attn.qkv.weight" = block("encoder", 3, "attn.qkv.weight")
inline std::string block(const std::string& stack, int layer, const std::string& leaf) {
  return stack + ".blocks." + std::to_string(layer) + "." + leaf;
}

// The calibrated K/V maxima of a decoder layer (`wisp calibrate`): "decoder.blocks.N.attn.kv_amax" for the
// self-attention cache, "decoder.blocks.N.cross_attn.kv_amax" for the cross-attention K/V; f32 [2·n_head],
// K heads then V heads.
inline std::string kv_amax(int layer, bool cross) {
  return block("decoder", layer, cross ? "cross_attn.kv_amax" : "attn.kv_amax");
}

// The calibrated statistics of a block layer norm's output (`wisp calibrate`), the input of the one linear layer
// it feeds: "<stack>.blocks.N.<norm>.output_stats", norm attn_ln, cross_attn_ln (decoder) or mlp_ln; f32 [2, d],
// row 0 the mean |x| of each column, row 1 the mean x². `wisp convert --weights int8|int4` scales the layer's
// columns by them (ops/column_scaling.h).
inline std::string norm_stats(const std::string& stack, int layer, const std::string& norm) {
  return block(stack, layer, norm + ".output_stats");
}

// The block norms whose output feeds exactly one linear layer, in model::BlockNorm's order: the norm's leaf name,
// the layer's, and whether only the decoder's blocks have it.
struct NormedLinear {
  const char* norm;
  const char* linear;
  bool decoder_only;
};
inline constexpr NormedLinear kNormedLinears[] = {
    {"attn_ln", "attn.qkv", false}, {"cross_attn_ln", "cross_attn.query", true}, {"mlp_ln", "mlp.fc1", false}};

// A block's linear layers, in model::BlockLinear's order: the leaf name, and whether only the decoder's blocks have
// it.
struct BlockLinearName {
  const char* linear;
  bool decoder_only;
};
inline constexpr BlockLinearName kBlockLinears[] = {
    {"attn.qkv", false},      {"attn.out", false}, {"cross_attn.query", true}, {"cross_attn.kv", true},
    {"cross_attn.out", true}, {"mlp.fc1", false},  {"mlp.fc2", false}};

// The calibrated Gram matrix of a block linear layer's inputs (`wisp calibrate --input-gram`):
// "<stack>.blocks.N.<linear>.input_gram", f32 [in, in], E[x xᵀ] over every row the calibration passed through the
// layer. `wisp convert --weights int8|int4 --gptq` rounds the layer with it (ops::gptq_int8 / gptq_int4).
inline std::string input_gram(const std::string& stack, int layer, const std::string& linear) {
  return block(stack, layer, linear + ".input_gram");
}

}  // namespace wisp::format::names
