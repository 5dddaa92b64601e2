// The public entry points that forward to the internal layers.
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
  if (options.weights == "keep") {
    o.weights = format::WeightType::kKeep;
  } else if (options.weights == "f16") {
    o.weights = format::WeightType::kF16;
  } else if (options.weights == "f32") {
    o.weights = format::WeightType::kF32;
  } else {
    throw InvalidArgument("unknown weight type '" + options.weights + "' (keep, f16 or f32)");
  }
  format::convert_model(src, dst, o);
}

}  // namespace wisp
