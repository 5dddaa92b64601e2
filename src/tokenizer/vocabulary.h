// Building a tokenizer's vocabulary: tiktoken rank files, CTranslate2/Hugging Face byte-level vocabularies,
// and the special tokens Whisper appends after the ordinary ones.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace wisp::tokenizer {

// GPT-2 stores tokens as printable strings: each byte maps to one code point (bytes_to_unicode). These
// convert between that form and raw bytes. byte_level_to_bytes throws InvalidArgument on a character
// outside the mapping or on invalid UTF-8.
std::string byte_level_to_bytes(std::string_view token);
std::string bytes_to_byte_level(std::string_view bytes);

// Ordinary token bytes in rank order from a .tiktoken file ("<base64> <rank>" per line, ranks 0..n-1).
// Throws IoError when the file cannot be read, InvalidArgument when it is malformed.
std::vector<std::string> load_tiktoken(const std::string& path);

// A CTranslate2 vocabulary.txt (one byte-level token per line, ids in order, special tokens included),
// converted to raw bytes. Throws IoError / InvalidArgument.
std::vector<std::string> load_byte_level_vocabulary(const std::string& path);

// The special tokens Whisper appends after the ordinary ones, in id order: <|endoftext|>,
// <|startoftranscript|>, one per language, the task and control tokens, then 1501 timestamps.
std::vector<std::string> special_token_texts(int num_languages);

// Finds the special tokens of a full vocabulary by their text. Throws InvalidArgument when eot, sot or
// the timestamps are missing.
SpecialTokens find_special_tokens(const std::vector<std::string>& tokens);

}  // namespace wisp::tokenizer
