// Transcript output formats (txt, srt, vtt, json, tsv) and safe file writing.
#pragma once

#include <string>
#include <vector>

#include "wisp/transcript.h"

namespace wisp {

// Known formats, in the order "all" expands to.
const std::vector<std::string>& output_formats();
// Renders `t` in `format`; throws InvalidArgument for an unknown format.
std::string render(const Transcript& t, const std::string& format);
// Writes through a temporary file and a rename: never a half-written file. Throws IoError.
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace wisp
