// Output writers: txt, srt, vtt, json, tsv, in the layouts of the reference CLI.
#pragma once

#include <string>
#include <vector>

#include "wisp/transcript.h"

namespace wisp::pipeline {

// Known formats, in the order "all" expands to.
const std::vector<std::string>& output_formats();

// Subtitle layout options of the reference CLI (openai-whisper's SubtitlesWriter). They act on srt and vtt
// when the transcript has word timestamps (some segment has words); 0 means "not set". (The public
// wisp::WriterOptions mirrors this; it is a separate type so that unqualified render() calls here do not
// also find wisp::render through argument-dependent lookup.)
struct WriterOptions {
  bool highlight_words = false;  // a cue per word with the word underlined: <u>word</u>
  int max_line_width = 0;        // characters (code points) per line before a line break
  int max_line_count = 0;        // lines per cue; with max_line_width set too, cues no longer follow
                                 // segments and a pause over 3 s starts a new cue
  int max_words_per_line = 0;    // words per cue while cues follow segments (no effect otherwise)
};

// Renders `t` in `format` ("txt", "srt", "vtt", "json", "tsv"); throws InvalidArgument otherwise. json
// lists each segment's words when the transcript has word timestamps.
std::string render(const Transcript& t, const std::string& format);
std::string render(const Transcript& t, const std::string& format, const WriterOptions& options);

// Writes `contents` to `path` atomically: a temporary file beside it, then rename, so a failed run never
// leaves a half-written output. Throws IoError.
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace wisp::pipeline
