// Results of a transcription, independent of how they were produced.
#pragma once

#include <string>
#include <vector>

namespace wisp {

// One word of a segment with its timing from the cross-attention alignment (word timestamps).
struct Word {
  double start = 0.0;  // seconds from the start of the audio
  double end = 0.0;
  std::string word;          // as decoded, with its leading space and any merged punctuation
  double probability = 0.0;  // mean probability of the word's tokens
};

struct Segment {
  int id = 0;
  int seek = 0;        // mel frame (10 ms) where the 30 s window of this segment started
  double start = 0.0;  // seconds from the start of the audio
  double end = 0.0;
  std::string text;         // as decoded, with the leading space the model emits
  std::vector<int> tokens;  // text and timestamp tokens of the segment
  double temperature = 0.0;
  double avg_logprob = 0.0;
  double compression_ratio = 0.0;
  double no_speech_prob = 0.0;
  std::vector<Word> words;  // empty unless word timestamps were requested
};

struct Transcript {
  std::string language;  // ISO code, e.g. "en"
  double language_probability = 0.0;
  double duration = 0.0;  // seconds of audio
  std::vector<Segment> segments;
  std::string text() const;  // all segment texts joined
};

}  // namespace wisp
