// The decoding modes the GPU transcript check compares (tests/gpu): shared by the kit maker, which records
// the CPU transcripts, and the check, which repeats them on the GPU.
#pragma once

#include <string>
#include <vector>

#include "wisp/model.h"

namespace wisp::test {

struct TranscriptMode {
  std::string name;
  TranscribeOptions options;
};

inline std::vector<TranscriptMode> transcript_modes() {
  TranscribeOptions greedy;
  greedy.beam_size = 1;
  greedy.temperatures = {0.0};
  TranscribeOptions defaults;  // beam 5 + temperature fallback (seeded sampling)
  TranscribeOptions words = greedy;
  words.word_timestamps = true;
  return {{"greedy", greedy}, {"beam5_fallback", defaults}, {"greedy_words", words}};
}

}  // namespace wisp::test
