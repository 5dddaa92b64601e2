// The public entry points that forward to the internal layers.
#include <map>

#include "format/importers.h"
#include "pipeline/writers.h"
#include "wisp/convert.h"
#include "wisp/errors.h"
#include "wisp/output.h"

namespace wisp {

const std::vector<std::string>& output_formats() { return pipeline::output_formats(); }

std::string render(const Transcript& t, const std::string& format) { return pipeline::render(t, format); }

std::string render(const Transcript& t, const std::string& format, const WriterOptions& options) {
  pipeline::WriterOptions o;
  o.highlight_words = options.highlight_words;
  o.max_line_width = options.max_line_width;
  o.max_line_count = options.max_line_count;
  o.max_words_per_line = options.max_words_per_line;
  return pipeline::render(t, format, o);
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  pipeline::write_file_atomic(path, contents);
}

void convert(const std::string& src, const std::string& dst, const ConvertOptions& options) {
  format::ConvertOptions o;
  o.name = options.name;
  o.activation_scaling = options.activation_scaling;
  o.keep_float = options.keep_float;
  o.gptq = options.gptq;
  const std::map<std::string, format::WeightType> weights = {
      {"keep", format::WeightType::kKeep}, {"f16", format::WeightType::kF16},  {"fp16", format::WeightType::kF16},
      {"f32", format::WeightType::kF32},   {"fp32", format::WeightType::kF32}, {"int8", format::WeightType::kInt8},
      {"int4", format::WeightType::kInt4}};
  const auto it = weights.find(options.weights);
  if (it == weights.end()) {
    throw InvalidArgument("unknown weight type '" + options.weights + "' (keep, fp16, fp32, int8 or int4)");
  }
  o.weights = it->second;
  if (options.group_size != 0) {
    if (o.weights != format::WeightType::kInt4) {
      throw InvalidArgument("a group size applies to int4 weights only, not " + options.weights);
    }
    if (options.group_size != 64 && options.group_size != 128) {
      throw InvalidArgument("group size " + std::to_string(options.group_size) + " is not supported (64 or 128)");
    }
    o.group_size = options.group_size;
  }
  format::convert_model(src, dst, o);
}

}  // namespace wisp
