// Transcript output formats (txt, srt, vtt, json, tsv) and safe file writing.
#pragma once

#include <string>
#include <vector>

#include "wisp/transcript.h"

namespace wisp {

// Known formats, in the order "all" expands to.
const std::vector<std::string>& output_formats();
// Subtitle layout options of the reference CLI (openai-whisper's SubtitlesWriter). They act on srt and vtt
// when the transcript has word timestamps (some segment has words); 0 means "not set".
struct WriterOptions {
  bool highlight_words = false;  // a cue per word with the word underlined: <u>word</u>
  int max_line_width = 0;        // characters (code points) per line before a line break
  int max_line_count = 0;        // lines per cue; with max_line_width set too, cues no longer follow
                                 // segments and a pause over 3 s starts a new cue
  int max_words_per_line = 0;    // words per cue while cues follow segments (no effect otherwise)
};

// Renders `t` in `format`; throws InvalidArgument for an unknown format. json lists each segment's words
// when the transcript has word timestamps.
std::string render(const Transcript& t, const std::string& format);
std::string render(const Transcript& t, const std::string& format, const WriterOptions& options);
// Writes through a temporary file and a rename: never a half-written file. Throws IoError.
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace wisp
