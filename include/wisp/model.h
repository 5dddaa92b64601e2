// The wisp public API: load a model, transcribe audio.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "wisp/errors.h"
#include "wisp/transcript.h"

namespace wisp {

struct TranscribeOptions {
  std::string language = "auto";      // "auto" detects it (multilingual models); else an ISO code ("en")
  std::string task = "transcribe";    // or "translate" (to English)
  bool condition_on_previous_text = true;  // the previous window's text is the next window's prompt
  std::string initial_prompt;         // text placed before the first window, as previous text
  bool timestamps = true;             // false: decode with <|notimestamps|> (one segment per window)
  double max_initial_timestamp = 1.0; // the first timestamp of a window is at most this (seconds)
  bool suppress_blank = true;         // no blank or end-of-text as a window's first token
  double no_speech_threshold = 0.6;   // skip a window when P(no speech) is above this ...
  double logprob_threshold = -1.0;    // ... and its average log-probability is below this
  // Called after each window with (seconds transcribed, total seconds).
  std::function<void(double, double)> on_progress;
};

struct ModelInfo {
  std::string path;
  std::string name;
  bool multilingual = false;
  int n_mels = 0, n_vocab = 0, n_audio_layer = 0, n_text_layer = 0, n_state = 0, n_head = 0;
};

class Model {
 public:
  // Loads a wisp engine file (see `wisp convert`). threads <= 0 uses every core.
  // Throws IoError or ModelError.
  static std::unique_ptr<Model> load(const std::string& path, int threads = 0);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // samples: 16 kHz mono in [-1, 1]. Throws InvalidArgument (bad options) or AudioError (no samples).
  Transcript transcribe(std::span<const float> samples, const TranscribeOptions& options = {}) const;
  // Decodes any audio file FFmpeg reads and transcribes it.
  Transcript transcribe_file(const std::string& path, const TranscribeOptions& options = {}) const;

  ModelInfo info() const;

  struct Impl;

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace wisp
