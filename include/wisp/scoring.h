// Scoring transcripts against references the way the reference project evaluates Whisper:
// its text normalizers, then word error rate (or character error rate for languages without spaces).
#pragma once

#include <memory>
#include <string>

namespace wisp {

struct Score {
  bool by_char = false;    // CER (zh, ja, ko, ...) rather than WER
  std::string reference;   // normalised
  std::string hypothesis;  // normalised
  long errors = 0;         // edit distance in words or characters
  long units = 0;          // words or characters of the normalised reference
};

class Scorer {
 public:
  // english_json: the reference's British→American spelling map; "" finds the installed copy.
  // Throws IoError when it cannot be found.
  explicit Scorer(const std::string& english_json = "");
  ~Scorer();
  Score score(const std::string& language, const std::string& reference, const std::string& hypothesis) const;
  static bool scored_by_char(const std::string& language);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wisp
