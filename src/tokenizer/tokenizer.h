// Whisper's byte-level BPE tokenizer: decode (UTF-8 safe) and encode, special and timestamp tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace wisp::tokenizer {

// Ids of the special tokens. All follow from eot and the vocabulary size (see docs/engine-format.md).
struct SpecialTokens {
  int eot = -1;
  int sot = -1;
  int first_language = -1;  // id of <|en|>
  int num_languages = 0;    // 99 for v1/v2, 100 for v3, 0 for English-only models
  int translate = -1;
  int transcribe = -1;
  int sot_lm = -1;
  int sot_prev = -1;
  int no_speech = -1;
  int no_timestamps = -1;
  int timestamp_begin = -1;  // <|0.00|>; timestamp k is timestamp_begin + k, 0.02 s apart
};

class Tokenizer {
 public:
  // tokens[id] holds the raw bytes of token `id` for ordinary tokens (ids < eot), in rank order, and the
  // literal text ("<|en|>", "<|0.00|>", ...) for special tokens (ids >= eot).
  Tokenizer(std::vector<std::string> tokens, SpecialTokens special);

  const SpecialTokens& special() const { return special_; }
  int vocab_size() const { return static_cast<int>(tokens_.size()); }
  bool multilingual() const { return special_.num_languages > 0; }

  // Concatenated bytes of the ordinary tokens; special and timestamp tokens are skipped. Byte sequences
  // that are not valid UTF-8 (a character cut between token lists) become U+FFFD, as the reference does.
  std::string decode(std::span<const int> ids) const;
  // Like decode, but timestamp tokens are written as "<|1.08|>" and other specials by their text.
  std::string decode_with_timestamps(std::span<const int> ids) const;
  // Raw bytes of one token (possibly a partial UTF-8 character).
  const std::string& token_bytes(int id) const;

  // Byte-level BPE encoding of ordinary text (no special tokens are recognised in `text`).
  std::vector<int> encode(std::string_view text) const;

  // Language code <-> token id ("en" <-> 50259). nullopt for unknown codes.
  std::optional<int> language_token(std::string_view code) const;
  std::string language_code(int token) const;               // "" when `token` is not a language token
  static const std::vector<std::string>& language_codes();  // in token order: en, zh, de, ...

 private:
  std::vector<std::string> tokens_;
  SpecialTokens special_;
  // Lets rank_ be searched with a string_view (no allocation per BPE lookup).
  struct BytesHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  std::optional<int> rank(std::string_view bytes) const;
  void encode_piece(std::string_view piece, std::vector<int>& out) const;

  std::unordered_map<std::string, int, BytesHash, std::equal_to<>> rank_;  // bytes -> id for ordinary tokens
};

// Returns s with every invalid UTF-8 sequence replaced by U+FFFD (as Python's errors="replace").
std::string sanitize_utf8(std::string_view s);

}  // namespace wisp::tokenizer
