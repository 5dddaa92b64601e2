// Code-point helpers for the normalizers. The reference runs on Python str, so its regexes and string
// methods see code points with Python's own Unicode predicates; these reproduce those predicates so the
// hand-written scans in normalizers.cpp / english_numbers.cpp match the reference character for character.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace wisp::text::detail {

// UTF-8 -> code points. Invalid bytes become U+FFFD (what a decoder with errors="replace" would hand the
// reference), so any byte string can be normalised.
std::u32string utf8_to_u32(std::string_view s);
std::string u32_to_utf8(std::u32string_view s);

// Python's str.isspace() / re `\s` (the same table): ASCII \t\n\v\f\r, \x1c-\x1f, space, and the
// Unicode separators CPython lists.
bool is_space(char32_t c);
// Python re `\w` on str: letters, numbers (any N* category) and '_'.
bool is_word(char32_t c);
// Python re `\d` on str: a decimal digit (category Nd) of any script. Returns its value 0-9, or -1.
int decimal_value(char32_t c);
inline bool is_digit(char32_t c) { return decimal_value(c) >= 0; }
inline bool is_ascii_digit(char32_t c) { return c >= U'0' && c <= U'9'; }

// re `\b` at position i of s: exactly one of s[i-1], s[i] is a word character (outside s counts as not).
bool at_word_boundary(std::u32string_view s, size_t i);

// First letter of the general category ('L', 'M', 'N', 'P', 'S', 'Z', 'C') and whether it is Mn.
char category_class(char32_t c);
bool is_nonspacing_mark(char32_t c);

// Python's str.lower(): full lower-case mapping, including U+0130 -> "i\u0307" and the final-sigma rule.
std::u32string python_lower(std::u32string_view s);

// unicodedata.normalize("NFKC" / "NFKD", s).
std::u32string nfkc(std::u32string_view s);
std::u32string nfkd(std::u32string_view s);

// regex's findall(r"\X"): the extended grapheme clusters of s, in order.
std::vector<std::u32string> grapheme_clusters(std::u32string_view s);

// str.split() with no argument: runs of non-whitespace.
std::vector<std::u32string> split_whitespace(std::u32string_view s);

// re.sub(r"\s+", " ", s).
std::u32string collapse_whitespace(std::u32string_view s);

}  // namespace wisp::text::detail
