// The temperature fallback of faster-whisper's generate_with_fallback: decode at the first temperature
// (beam search or greedy at 0, best-of sampling above), and move to the next temperature while the
// result looks like a failure (too repetitive, or too improbable and not silence).
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "decoding/greedy.h"

namespace wisp::decoding {

struct FallbackRules {
  std::vector<double> temperatures{0.0};
  std::optional<double> compression_ratio_threshold = 2.4;  // above: too repetitive (gzip ratio of the text)
  std::optional<double> logprob_threshold = -1.0;           // below: too improbable
  std::optional<double> no_speech_threshold = 0.6;          // above (with a low log-probability): silence
};

struct FallbackResult {
  WindowResult result;
  double temperature = 0.0;        // of the last attempt (what prompt_reset_on_temperature compares)
  double compression_ratio = 0.0;  // of the chosen result's text
  int attempts = 0;                // temperatures tried
};

// Runs `decode(temperature)` for each temperature until one passes the rules, exactly as the reference:
//   fallback if compression_ratio(result) > compression_ratio_threshold, or avg_logprob < logprob_threshold,
//   but never when no_speech_prob > no_speech_threshold and avg_logprob < logprob_threshold (silence);
// when every temperature fails, the result with the highest avg_logprob among those under the compression
// threshold (or among all, if none is) is returned, with the last temperature.
FallbackResult generate_with_fallback(const FallbackRules& rules,
                                      const std::function<WindowResult(double temperature)>& decode,
                                      const std::function<double(const WindowResult&)>& compression_ratio);

}  // namespace wisp::decoding
