#include "tokenizer/vocabulary.h"

#include <utf8proc.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "wisp/errors.h"

namespace wisp::tokenizer {
namespace {

// GPT-2's byte <-> code point table. Printable Latin-1 bytes stand for themselves; the other 68 bytes
// (controls, space, soft hyphen, ...) are moved, in byte order, to U+0100.. so every token is a string of
// visible characters.
struct ByteLevelTable {
  std::array<int32_t, 256> to_code_point{};
  std::array<int16_t, 256 + 68> to_byte{};  // code points 0..323 cover the whole image

  ByteLevelTable() {
    to_byte.fill(-1);
    int next_moved = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      int cp = printable ? b : next_moved++;
      to_code_point[b] = cp;
      to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table;
  return table;
}

// Value of a base64 digit, or -1.
int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Strict base64 (standard alphabet). Padding is optional, since the token for rank 50256 of
// multilingual.tiktoken is a lone "=" (the empty string), which Python's decoder accepts too.
bool decode_base64(std::string_view in, std::string& out) {
  size_t data_len = in.size();
  while (data_len > 0 && in[data_len - 1] == '=') --data_len;
  if (in.size() - data_len > 2 || data_len % 4 == 1) return false;
  out.clear();
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < data_len; ++i) {
    int v = base64_value(in[i]);
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return true;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError("cannot read " + path);
  return std::move(ss).str();
}

bool is_language_text(const std::string& t) {
  // "<|en|>", "<|haw|>": the only specials whose body is 2-3 lowercase letters.
  if (t.size() < 6 || t.size() > 7 || t.compare(0, 2, "<|") != 0 || t.compare(t.size() - 2, 2, "|>") != 0) {
    return false;
  }
  for (size_t i = 2; i + 2 < t.size(); ++i) {
    if (t[i] < 'a' || t[i] > 'z') return false;
  }
  return true;
}

// English-only models keep GPT-2's 50256 ordinary tokens; multilingual ones have 50257.
constexpr int kGpt2Eot = 50256;
constexpr int kNumTimestamps = 1501;

}  // namespace

std::string byte_level_to_bytes(std::string_view token) {
  const auto& table = byte_level_table();
  std::string out;
  out.reserve(token.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(token.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(token.size());
  while (left > 0) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n <= 0) throw InvalidArgument("byte-level token is not valid UTF-8: " + std::string(token));
    if (cp < 0 || cp >= static_cast<int32_t>(table.to_byte.size()) || table.to_byte[cp] < 0) {
      throw InvalidArgument("code point " + std::to_string(cp) + " is not in the byte-level alphabet (token \"" +
                            std::string(token) + "\")");
    }
    out.push_back(static_cast<char>(table.to_byte[cp]));
    p += n;
    left -= n;
  }
  return out;
}

std::string bytes_to_byte_level(std::string_view bytes) {
  const auto& table = byte_level_table();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    utf8proc_uint8_t buf[4];
    utf8proc_ssize_t n = utf8proc_encode_char(table.to_code_point[b], buf);
    out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
  }
  return out;
}

std::vector<std::string> load_tiktoken(const std::string& path) {
  std::string data = read_file(path);
  std::vector<std::string> tokens;
  std::vector<bool> seen;
  std::string bytes;
  size_t pos = 0;
  int line_no = 0;
  while (pos < data.size()) {
    size_t eol = data.find('\n', pos);
    if (eol == std::string::npos) eol = data.size();
    std::string_view line(data.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    auto bad = [&](const std::string& why) {
      return InvalidArgument(path + ":" + std::to_string(line_no) + ": " + why);
    };
    size_t space = line.find(' ');
    if (space == std::string_view::npos) throw bad("expected \"<base64> <rank>\"");
    std::string_view b64 = line.substr(0, space);
    std::string_view rank_text = line.substr(space + 1);
    if (!decode_base64(b64, bytes)) throw bad("invalid base64 \"" + std::string(b64) + "\"");
    if (rank_text.empty() || rank_text.size() > 9) throw bad("invalid rank");
    size_t rank = 0;
    for (char c : rank_text) {
      if (c < '0' || c > '9') throw bad("invalid rank \"" + std::string(rank_text) + "\"");
      rank = rank * 10 + static_cast<size_t>(c - '0');
    }
    if (rank >= tokens.size()) {
      tokens.resize(rank + 1);
      seen.resize(rank + 1, false);
    }
    if (seen[rank]) throw bad("duplicate rank " + std::to_string(rank));
    seen[rank] = true;
    tokens[rank] = bytes;
  }
  if (tokens.empty()) throw InvalidArgument(path + ": no tokens");
  for (size_t r = 0; r < seen.size(); ++r) {
    if (!seen[r]) throw InvalidArgument(path + ": rank " + std::to_string(r) + " is missing");
  }
  return tokens;
}

std::vector<std::string> load_byte_level_vocabulary(const std::string& path) {
  std::string data = read_file(path);
  std::vector<std::string> tokens;
  size_t pos = 0;
  int line_no = 0;
  // An empty line is a real (empty) token: multilingual id 50256 is "". Only the final newline ends the
  // list without starting another token.
  while (pos < data.size()) {
    size_t eol = data.find('\n', pos);
    if (eol == std::string::npos) eol = data.size();
    std::string_view line(data.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    try {
      tokens.push_back(byte_level_to_bytes(line));
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(path + ":" + std::to_string(line_no) + ": " + e.what());
    }
  }
  if (tokens.empty()) throw InvalidArgument(path + ": no tokens");
  return tokens;
}

std::vector<std::string> special_token_texts(int num_languages) {
  const auto& codes = Tokenizer::language_codes();
  if (num_languages < 0 || num_languages > static_cast<int>(codes.size())) {
    throw InvalidArgument("num_languages must be in [0, " + std::to_string(codes.size()) + "], got " +
                          std::to_string(num_languages));
  }
  std::vector<std::string> out = {"<|endoftext|>", "<|startoftranscript|>"};
  for (int i = 0; i < num_languages; ++i) out.push_back("<|" + codes[i] + "|>");
  for (const char* t :
       {"<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"}) {
    out.emplace_back(t);
  }
  for (int i = 0; i < kNumTimestamps; ++i) {
    // The reference formats i * 0.02 with "%.2f"; the products stay far from a rounding tie.
    char buf[32];
    std::snprintf(buf, sizeof(buf), "<|%.2f|>", i * 0.02);
    out.emplace_back(buf);
  }
  return out;
}

SpecialTokens find_special_tokens(const std::vector<std::string>& tokens) {
  // Only "<|...|>" strings can be specials; index them once (first occurrence wins).
  std::unordered_map<std::string_view, int> ids;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    if (t.size() >= 4 && t.compare(0, 2, "<|") == 0 && t.compare(t.size() - 2, 2, "|>") == 0) {
      ids.emplace(t, static_cast<int>(i));
    }
  }
  auto find = [&](std::string_view text) {
    auto it = ids.find(text);
    return it == ids.end() ? -1 : it->second;
  };

  SpecialTokens s;
  s.eot = find("<|endoftext|>");
  s.sot = find("<|startoftranscript|>");
  s.timestamp_begin = find("<|0.00|>");
  if (s.eot < 0) throw InvalidArgument("vocabulary has no <|endoftext|> token");
  if (s.sot < 0) throw InvalidArgument("vocabulary has no <|startoftranscript|> token");
  if (s.timestamp_begin < 0) throw InvalidArgument("vocabulary has no timestamp tokens");
  // The decoder addresses timestamp k as timestamp_begin + k, so the whole run must be there in order.
  int last_timestamp = s.timestamp_begin + kNumTimestamps - 1;
  if (last_timestamp >= static_cast<int>(tokens.size()) || tokens[last_timestamp] != "<|30.00|>") {
    throw InvalidArgument("vocabulary's timestamp tokens do not run from <|0.00|> to <|30.00|>");
  }
  s.translate = find("<|translate|>");
  s.transcribe = find("<|transcribe|>");
  s.sot_lm = find("<|startoflm|>");
  s.sot_prev = find("<|startofprev|>");
  s.no_speech = find("<|nospeech|>");
  if (s.no_speech < 0) s.no_speech = find("<|nocaptions|>");  // the name in older vocabularies
  s.no_timestamps = find("<|notimestamps|>");

  // Language tokens follow sot directly. English-only vocabularies carry them as well, but those models
  // were never trained to predict them, so they count as having no languages.
  int n = 0;
  while (s.sot + 1 + n < static_cast<int>(tokens.size()) && is_language_text(tokens[s.sot + 1 + n])) ++n;
  if (s.eot != kGpt2Eot && n > 0) {
    s.first_language = s.sot + 1;
    s.num_languages = n;
  }
  return s;
}

}  // namespace wisp::tokenizer
