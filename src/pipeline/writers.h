// Output writers: txt, srt, vtt, json, tsv, in the layouts of the reference CLI.
#pragma once

#include <string>
#include <vector>

#include "wisp/transcript.h"

namespace wisp::pipeline {

// Known formats, in the order "all" expands to.
const std::vector<std::string>& output_formats();

// Renders `t` in `format` ("txt", "srt", "vtt", "json", "tsv"); throws InvalidArgument otherwise.
std::string render(const Transcript& t, const std::string& format);

// Writes `contents` to `path` atomically: a temporary file beside it, then rename, so a failed run never
// leaves a half-written output. Throws IoError.
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace wisp::pipeline
