#include "wisp/scoring.h"

#include "text/assets.h"
#include "text/normalizers.h"

namespace wisp {

struct Scorer::Impl {
  text::EnglishNormalizer english;
  explicit Impl(const std::string& path) : english(path) {}
};

Scorer::Scorer(const std::string& english_json)
    : impl_(std::make_unique<Impl>(english_json.empty() ? text::default_english_json_path() : english_json)) {}
Scorer::~Scorer() = default;

bool Scorer::scored_by_char(const std::string& language) {
  // Languages written without spaces between words are scored per character.
  return language == "zh" || language == "ja" || language == "ko" || language == "th" || language == "lo" ||
         language == "my" || language == "yue";
}

Score Scorer::score(const std::string& language, const std::string& reference, const std::string& hypothesis) const {
  Score s;
  s.by_char = scored_by_char(language);
  if (language == "en") {
    s.reference = impl_->english(reference);
    s.hypothesis = impl_->english(hypothesis);
  } else {
    s.reference = text::normalize_basic(reference);
    s.hypothesis = text::normalize_basic(hypothesis);
  }
  const text::ErrorCounts c =
      s.by_char ? text::char_errors(s.reference, s.hypothesis) : text::word_errors(s.reference, s.hypothesis);
  s.errors = c.errors;
  s.units = c.reference;
  return s;
}

}  // namespace wisp
