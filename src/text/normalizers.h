// Text normalizers for scoring, ported from the reference's whisper/normalizers, and error rates.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace wisp::text {

// The reference's BasicTextNormalizer: lower-case, drop bracketed/parenthesised spans, symbols and
// punctuation to spaces (optionally stripping diacritics), and with split_letters one "word" per
// grapheme (for languages written without spaces).
std::string normalize_basic(std::string_view text, bool remove_diacritics = false, bool split_letters = false);

// The reference's EnglishTextNormalizer (fillers, contractions, numbers to digits, British to American
// spelling from english.json, currency, ...). Built once from the spelling map file.
class EnglishNormalizer {
 public:
  // `spelling_json` is the reference's normalizers/english.json (British -> American mapping).
  explicit EnglishNormalizer(const std::string& spelling_json);
  std::string operator()(std::string_view text) const;

 private:
  std::unordered_map<std::string, std::string> spelling_;
};

struct ErrorCounts {
  long errors = 0;     // substitutions + deletions + insertions (Levenshtein distance)
  long reference = 0;  // number of reference units (words or characters)
};

// Word-level edit distance between whitespace-separated words of already-normalised texts.
ErrorCounts word_errors(std::string_view reference, std::string_view hypothesis);
// Character-level (Unicode code points, whitespace removed) edit distance, for zh/ja/ko.
ErrorCounts char_errors(std::string_view reference, std::string_view hypothesis);

}  // namespace wisp::text
