#include "tokenizer/tokenizer.h"

#include <utf8proc.h>

#include <climits>
#include <queue>
#include <utility>

#include "wisp/errors.h"

namespace wisp::tokenizer {
namespace {

constexpr int kNoRank = INT_MAX;

// The four character classes the GPT-2 pre-tokenizer pattern distinguishes.
enum class CharClass { kLetter, kNumber, kSpace, kOther };

struct Char {
  int32_t cp;  // -1 for a byte that does not start a valid UTF-8 character
  size_t len;
};

Char char_at(std::string_view text, size_t i) {
  auto b = static_cast<unsigned char>(text[i]);
  if (b < 0x80) return {b, 1};
  utf8proc_int32_t cp = 0;
  utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + i),
                                        static_cast<utf8proc_ssize_t>(text.size() - i), &cp);
  // Python strings cannot hold invalid UTF-8, so the reference never meets it; treating each stray byte
  // as punctuation keeps encode total and decode(encode(x)) == x for any bytes.
  if (n <= 0) return {-1, 1};
  return {cp, static_cast<size_t>(n)};
}

// \s of the pattern is Unicode White_Space, a property (not a category) that utf8proc does not expose;
// the list is short and has been stable for many Unicode versions.
bool is_white_space(int32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

CharClass classify(int32_t cp) {
  if (cp < 0) return CharClass::kOther;
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CharClass::kLetter;
    if (cp >= '0' && cp <= '9') return CharClass::kNumber;
    if ((cp >= 0x09 && cp <= 0x0D) || cp == ' ') return CharClass::kSpace;
    return CharClass::kOther;
  }
  if (is_white_space(cp)) return CharClass::kSpace;
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
      return CharClass::kLetter;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return CharClass::kNumber;
    default:
      return CharClass::kOther;
  }
}

// End of the pre-token starting at `i`: the match of
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with the regex's leftmost-alternative semantics, done by hand in one forward pass.
size_t piece_end(std::string_view text, size_t i) {
  const size_t n = text.size();
  if (text[i] == '\'' && i + 1 < n) {
    char a = text[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n) {
      char b = text[i + 2];
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
  }
  Char c = char_at(text, i);
  CharClass cls = classify(c.cp);
  size_t run_start = i;
  // The optional leading space of the letter/number/other alternatives: a single U+0020 joins the run
  // that follows it when that run is not whitespace.
  if (c.cp == ' ' && i + 1 < n) {
    CharClass next = classify(char_at(text, i + 1).cp);
    if (next != CharClass::kSpace) {
      cls = next;
      run_start = i + 1;
    }
  }
  if (cls != CharClass::kSpace) {
    size_t j = run_start;
    while (j < n) {
      Char d = char_at(text, j);
      if (classify(d.cp) != cls) break;
      j += d.len;
    }
    return j;
  }
  // Whitespace: \s+(?!\S) takes the run but leaves its last character to prefix the following word;
  // a single whitespace character before a word falls through to the plain \s+.
  size_t j = i;
  size_t last_start = i;
  int count = 0;
  while (j < n) {
    Char d = char_at(text, j);
    if (classify(d.cp) != CharClass::kSpace) break;
    last_start = j;
    j += d.len;
    ++count;
  }
  if (j == n || count == 1) return j;
  return last_start;
}

// Length of the valid UTF-8 character at s[i], or 0 with `*bad` set to the length of the maximal
// invalid prefix (at least 1): Python's "replace" error handler emits one U+FFFD per such prefix.
size_t utf8_char_len(std::string_view s, size_t i, size_t* bad) {
  auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    *bad = 1;
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= s.size()) {
      *bad = k;
      return 0;
    }
    auto b = static_cast<unsigned char>(s[i + k]);
    bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) {
      *bad = k;
      return 0;
    }
  }
  return need + 1;
}

}  // namespace

std::string sanitize_utf8(std::string_view s) {
  size_t bad = 0;
  size_t i = 0;
  // Fast path: most decoded text is valid and is returned unchanged.
  while (i < s.size()) {
    size_t len = utf8_char_len(s, i, &bad);
    if (len == 0) break;
    i += len;
  }
  if (i == s.size()) return std::string(s);
  std::string out(s.substr(0, i));
  while (i < s.size()) {
    size_t len = utf8_char_len(s, i, &bad);
    if (len > 0) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      i += bad;
    }
  }
  return out;
}

const std::vector<std::string>& Tokenizer::language_codes() {
  // The reference's LANGUAGES order, which is the order of the language tokens after <|startoftranscript|>.
  static const std::vector<std::string> codes = {
      "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt",  "tr", "pl", "ca", "nl", "ar", "sv",  "it", "id",
      "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro",  "da", "hu", "ta", "no", "th", "ur",  "hr", "bg",
      "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv",  "bn", "sr", "az", "sl", "kn", "et",  "mk", "br",
      "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw",  "gl", "mr", "pa", "si", "km", "sn",  "yo", "so",
      "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi",  "lo", "uz", "fo", "ht", "ps", "tk",  "nn", "mt",
      "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
  };
  return codes;
}

Tokenizer::Tokenizer(std::vector<std::string> tokens, SpecialTokens special)
    : tokens_(std::move(tokens)), special_(special) {
  const int size = vocab_size();
  if (special_.eot <= 0 || special_.eot > size) {
    throw InvalidArgument("tokenizer: eot id " + std::to_string(special_.eot) + " is outside the vocabulary of " +
                          std::to_string(size));
  }
  if (special_.timestamp_begin < special_.eot || special_.timestamp_begin >= size) {
    throw InvalidArgument("tokenizer: timestamp_begin id " + std::to_string(special_.timestamp_begin) +
                          " is outside the special tokens");
  }
  if (special_.num_languages < 0 ||
      (special_.num_languages > 0 &&
       (special_.first_language <= special_.eot || special_.first_language + special_.num_languages > size))) {
    throw InvalidArgument("tokenizer: language token range is outside the vocabulary");
  }
  rank_.reserve(static_cast<size_t>(special_.eot));
  for (int id = 0; id < special_.eot; ++id) {
    // Multilingual id 50256 is the empty string; it can never be the result of a merge.
    if (!tokens_[id].empty()) rank_.emplace(tokens_[id], id);
  }
  // BPE starts from single bytes, so every byte must be a token or some input could not be encoded.
  for (int b = 0; b < 256; ++b) {
    if (!rank(std::string(1, static_cast<char>(b)))) {
      throw InvalidArgument("tokenizer: vocabulary lacks the single-byte token " + std::to_string(b));
    }
  }
}

std::optional<int> Tokenizer::rank(std::string_view bytes) const {
  auto it = rank_.find(bytes);
  if (it == rank_.end()) return std::nullopt;
  return it->second;
}

const std::string& Tokenizer::token_bytes(int id) const {
  if (id < 0 || id >= vocab_size()) {
    throw InvalidArgument("token id " + std::to_string(id) + " is outside the vocabulary of " +
                          std::to_string(vocab_size()));
  }
  return tokens_[id];
}

std::string Tokenizer::decode(std::span<const int> ids) const {
  std::string bytes;
  for (int id : ids) {
    const std::string& t = token_bytes(id);
    if (id < special_.eot) bytes += t;
  }
  return sanitize_utf8(bytes);
}

std::string Tokenizer::decode_with_timestamps(std::span<const int> ids) const {
  std::string bytes;
  for (int id : ids) bytes += token_bytes(id);  // specials are stored as their text
  return sanitize_utf8(bytes);
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<int>& out) const {
  if (auto whole = rank(piece)) {
    out.push_back(*whole);
    return;
  }
  // Repeatedly merge the adjacent pair whose concatenation has the lowest rank (leftmost on ties), as
  // the reference does. Parts form a linked list over byte offsets (part k spans [k, next[k])) and
  // candidate pairs sit in a min-heap with lazy invalidation, so a long piece costs O(n log n), not O(n^2).
  const int n = static_cast<int>(piece.size());
  std::vector<int> next(n), prev(n), pair_rank(n, kNoRank);
  for (int k = 0; k < n; ++k) {
    next[k] = k + 1;
    prev[k] = k - 1;
  }
  auto rank_of_pair = [&](int k) {
    int m = next[k];
    if (m >= n) return kNoRank;
    int end = next[m];
    return rank(piece.substr(k, end - k)).value_or(kNoRank);
  };
  using Entry = std::pair<int, int>;  // (rank, offset of the left part): orders ties leftmost first
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  for (int k = 0; k + 1 < n; ++k) {
    pair_rank[k] = rank_of_pair(k);
    if (pair_rank[k] != kNoRank) heap.emplace(pair_rank[k], k);
  }
  while (!heap.empty()) {
    auto [r, k] = heap.top();
    heap.pop();
    // A pair's span only grows, and a longer string has another rank, so a changed rank marks a stale
    // entry; merged-away parts carry kNoRank.
    if (pair_rank[k] != r) continue;
    int m = next[k];
    next[k] = next[m];
    if (next[k] < n) prev[next[k]] = k;
    pair_rank[m] = kNoRank;
    pair_rank[k] = rank_of_pair(k);
    if (pair_rank[k] != kNoRank) heap.emplace(pair_rank[k], k);
    if (int p = prev[k]; p >= 0) {
      pair_rank[p] = rank_of_pair(p);
      if (pair_rank[p] != kNoRank) heap.emplace(pair_rank[p], p);
    }
  }
  for (int k = 0; k < n; k = next[k]) {
    auto id = rank(piece.substr(k, next[k] - k));
    if (!id) throw InternalError("BPE produced a part that is not a token");
    out.push_back(*id);
  }
}

std::vector<int> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + 1);
  size_t i = 0;
  while (i < text.size()) {
    size_t end = piece_end(text, i);
    encode_piece(text.substr(i, end - i), ids);
    i = end;
  }
  return ids;
}

std::optional<int> Tokenizer::language_token(std::string_view code) const {
  // Older Hugging Face conversions name Hebrew by its withdrawn ISO code "iw"; accept either spelling.
  std::string_view alias = code == "he" ? "iw" : code == "iw" ? "he" : "";
  for (std::string_view c : {code, alias}) {
    if (c.empty()) continue;
    for (int i = 0; i < special_.num_languages; ++i) {
      const std::string& t = tokens_[special_.first_language + i];
      if (t.size() == c.size() + 4 && std::string_view(t).substr(2, c.size()) == c) {
        return special_.first_language + i;
      }
    }
  }
  return std::nullopt;
}

std::string Tokenizer::language_code(int token) const {
  if (special_.num_languages <= 0 || token < special_.first_language ||
      token >= special_.first_language + special_.num_languages) {
    return "";
  }
  const std::string& t = tokens_[token];
  std::string code = t.size() > 4 ? t.substr(2, t.size() - 4) : "";
  return code == "iw" ? "he" : code;  // report the reference's code whatever the vocabulary calls it
}

}  // namespace wisp::tokenizer
