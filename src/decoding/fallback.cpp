#include "decoding/fallback.h"

#include "wisp/errors.h"

namespace wisp::decoding {

FallbackResult generate_with_fallback(const FallbackRules& rules,
                                      const std::function<WindowResult(double temperature)>& decode,
                                      const std::function<double(const WindowResult&)>& compression_ratio) {
  if (rules.temperatures.empty()) throw InvalidArgument("no temperature to decode at");
  std::vector<FallbackResult> all, below_cr;
  for (size_t i = 0; i < rules.temperatures.size(); ++i) {
    const double t = rules.temperatures[i];
    FallbackResult f;
    f.result = decode(t);
    f.temperature = t;
    f.compression_ratio = compression_ratio(f.result);
    f.attempts = static_cast<int>(i) + 1;
    all.push_back(f);

    bool needs_fallback = false;
    if (rules.compression_ratio_threshold) {
      if (f.compression_ratio > *rules.compression_ratio_threshold) {
        needs_fallback = true;  // too repetitive
      } else {
        below_cr.push_back(f);
      }
    }
    const double avg = f.result.avg_logprob;
    if (rules.logprob_threshold && avg < *rules.logprob_threshold) needs_fallback = true;  // too improbable
    if (rules.no_speech_threshold && f.result.no_speech_prob > *rules.no_speech_threshold && rules.logprob_threshold &&
        avg < *rules.logprob_threshold) {
      needs_fallback = false;  // silence: the caller skips the window
    }
    if (!needs_fallback) return f;
  }
  // Every temperature failed: the most probable result (Python's max keeps the first of equal ones).
  const std::vector<FallbackResult>& pool = below_cr.empty() ? all : below_cr;
  const FallbackResult* best = &pool.front();
  for (const FallbackResult& f : pool) {
    if (f.result.avg_logprob > best->result.avg_logprob) best = &f;
  }
  FallbackResult out = *best;
  out.temperature = rules.temperatures.back();
  out.attempts = static_cast<int>(rules.temperatures.size());
  return out;
}

}  // namespace wisp::decoding
