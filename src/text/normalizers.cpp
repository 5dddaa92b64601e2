#include "text/normalizers.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "text/english_numbers.h"
#include "text/unicode.h"
#include "wisp/errors.h"

namespace wisp::text {
namespace {

using detail::at_word_boundary;
using detail::is_space;
using Str = std::u32string;

// re.sub(r"[<\[][^>\]]*[>\]]", "", s): drop from '<' or '[' through the first '>' or ']'.
Str remove_bracketed(const Str& s) {
  Str out;
  out.reserve(s.size());
  for (size_t p = 0; p < s.size();) {
    if (s[p] == U'<' || s[p] == U'[') {
      const size_t close = s.find_first_of(U">]", p + 1);
      if (close == Str::npos) {  // no closer here means none for any later opener either
        out.append(s, p);
        break;
      }
      p = close + 1;
    } else {
      out += s[p++];
    }
  }
  return out;
}

// re.sub(r"\(([^)]+?)\)", "", s): drop from '(' through the first ')', if something lies between.
Str remove_parenthesized(const Str& s) {
  Str out;
  out.reserve(s.size());
  for (size_t p = 0; p < s.size();) {
    if (s[p] == U'(') {
      const size_t close = s.find(U')', p + 1);
      if (close == Str::npos) {
        out.append(s, p);
        break;
      }
      if (close > p + 1) {
        p = close + 1;
        continue;
      }
    }
    out += s[p++];
  }
  return out;
}

// Non-ASCII letters that NFKD does not split into a base letter and marks.
const std::unordered_map<char32_t, std::u32string_view>& additional_diacritics() {
  static const std::unordered_map<char32_t, std::u32string_view> map = {
      {U'œ', U"oe"}, {U'Œ', U"OE"}, {U'ø', U"o"}, {U'Ø', U"O"}, {U'æ', U"ae"}, {U'Æ', U"AE"},
      {U'ß', U"ss"}, {U'ẞ', U"SS"}, {U'đ', U"d"}, {U'Đ', U"D"}, {U'ð', U"d"},  {U'Ð', U"D"},
      {U'þ', U"th"}, {U'Þ', U"th"}, {U'ł', U"l"}, {U'Ł', U"L"}};
  return map;
}

// The reference's remove_symbols_and_diacritics: NFKD, then drop nonspacing marks, spell out the letters
// above, and turn other marks, symbols and punctuation into spaces (except those in `keep`).
Str remove_symbols_and_diacritics(const Str& s, std::u32string_view keep) {
  const auto& extra = additional_diacritics();
  Str out;
  for (char32_t c : detail::nfkd(s)) {
    if (keep.find(c) != std::u32string_view::npos) {
      out += c;
    } else if (auto it = extra.find(c); it != extra.end()) {
      out += it->second;
    } else if (detail::is_nonspacing_mark(c)) {
      // dropped
    } else {
      const char k = detail::category_class(c);
      out += (k == 'M' || k == 'S' || k == 'P') ? U' ' : c;
    }
  }
  return out;
}

// The reference's remove_symbols: NFKC, then marks, symbols and punctuation to spaces.
Str remove_symbols(const Str& s) {
  Str out = detail::nfkc(s);
  for (char32_t& c : out) {
    const char k = detail::category_class(c);
    if (k == 'M' || k == 'S' || k == 'P') c = U' ';
  }
  return out;
}

// Replaces each leftmost, non-overlapping occurrence of `literal`, optionally requiring a word boundary
// (re `\b`) before and/or after it, as re.sub does with such a pattern.
Str replace_literal(const Str& s, std::u32string_view literal, std::u32string_view replacement, bool boundary_before,
                    bool boundary_after) {
  Str out;
  out.reserve(s.size());
  for (size_t p = 0; p < s.size();) {
    if (s.compare(p, literal.size(), literal) == 0 && (!boundary_before || at_word_boundary(s, p)) &&
        (!boundary_after || at_word_boundary(s, p + literal.size()))) {
      out += replacement;
      p += literal.size();
    } else {
      out += s[p++];
    }
  }
  return out;
}

// re.sub(r"\b(hmm|mm|mhm|mmm|uh|um)\b", "", s)
Str remove_fillers(const Str& s) {
  static const std::u32string_view kFillers[] = {U"hmm", U"mm", U"mhm", U"mmm", U"uh", U"um"};
  Str out;
  out.reserve(s.size());
  for (size_t p = 0; p < s.size();) {
    bool removed = false;
    if (at_word_boundary(s, p)) {
      for (const auto filler : kFillers) {
        if (s.compare(p, filler.size(), filler) == 0 && at_word_boundary(s, p + filler.size())) {
          p += filler.size();
          removed = true;
          break;
        }
      }
    }
    if (!removed) out += s[p++];
  }
  return out;
}

// re.sub(r"\s+'", "'", s)
Str join_apostrophes(const Str& s) {
  Str out;
  out.reserve(s.size());
  for (size_t p = 0; p < s.size();) {
    if (!is_space(s[p])) {
      out += s[p++];
      continue;
    }
    size_t q = p;
    while (q < s.size() && is_space(s[q])) ++q;
    if (q < s.size() && s[q] == U'\'') {
      out += U'\'';
      p = q + 1;
    } else {
      out.append(s, p, q - p);
      p = q;
    }
  }
  return out;
}

struct Replacer {
  std::u32string_view pattern;
  std::u32string_view replacement;
  bool boundary_before;  // the reference's pattern starts with \b (all of them end with one)
};

// The reference's replacers, in its (dict insertion) order: each runs over the output of the previous.
constexpr Replacer kReplacers[] = {
    // common contractions
    {U"won't", U"will not", true},
    {U"can't", U"can not", true},
    {U"let's", U"let us", true},
    {U"ain't", U"aint", true},
    {U"y'all", U"you all", true},
    {U"wanna", U"want to", true},
    {U"gotta", U"got to", true},
    {U"gonna", U"going to", true},
    {U"i'ma", U"i am going to", true},
    {U"imma", U"i am going to", true},
    {U"woulda", U"would have", true},
    {U"coulda", U"could have", true},
    {U"shoulda", U"should have", true},
    {U"ma'am", U"madam", true},
    // contractions in titles/prefixes
    {U"mr", U"mister ", true},
    {U"mrs", U"missus ", true},
    {U"st", U"saint ", true},
    {U"dr", U"doctor ", true},
    {U"prof", U"professor ", true},
    {U"capt", U"captain ", true},
    {U"gov", U"governor ", true},
    {U"ald", U"alderman ", true},
    {U"gen", U"general ", true},
    {U"sen", U"senator ", true},
    {U"rep", U"representative ", true},
    {U"pres", U"president ", true},
    {U"rev", U"reverend ", true},
    {U"hon", U"honorable ", true},
    {U"asst", U"assistant ", true},
    {U"assoc", U"associate ", true},
    {U"lt", U"lieutenant ", true},
    {U"col", U"colonel ", true},
    {U"jr", U"junior ", true},
    {U"sr", U"senior ", true},
    {U"esq", U"esquire ", true},
    // perfect tenses
    {U"'d been", U" had been", false},
    {U"'s been", U" has been", false},
    {U"'d gone", U" had gone", false},
    {U"'s gone", U" has gone", false},
    {U"'d done", U" had done", false},
    {U"'s got", U" has got", false},
    // general contractions
    {U"n't", U" not", false},
    {U"'re", U" are", false},
    {U"'s", U" is", false},
    {U"'d", U" would", false},
    {U"'ll", U" will", false},
    {U"'t", U" not", false},
    {U"'ve", U" have", false},
    {U"'m", U" am", false},
};

// re.sub(r"(\d),(\d)", r"\1\2", s)
Str remove_digit_commas(const Str& s) {
  Str out;
  out.reserve(s.size());
  for (size_t p = 0; p < s.size();) {
    if (p + 2 < s.size() && detail::is_digit(s[p]) && s[p + 1] == U',' && detail::is_digit(s[p + 2])) {
      out += s[p];
      out += s[p + 2];
      p += 3;
    } else {
      out += s[p++];
    }
  }
  return out;
}

// re.sub(r"\.([^0-9]|$)", r" \1", s): periods not followed by a digit become spaces.
Str remove_periods(const Str& s) {
  Str out;
  out.reserve(s.size());
  for (size_t p = 0; p < s.size();) {
    if (s[p] == U'.' && (p + 1 == s.size() || !detail::is_ascii_digit(s[p + 1]))) {
      out += U' ';
      if (p + 1 < s.size()) out += s[p + 1];  // the matched follower, consumed with the period
      p += 2;
    } else {
      out += s[p++];
    }
  }
  return out;
}

// re.sub(r"[.$¢€£]([^0-9])", r" \1", s): symbols not followed by a digit.
Str remove_unattached_prefixes(const Str& s) {
  Str out;
  out.reserve(s.size());
  for (size_t p = 0; p < s.size();) {
    const char32_t c = s[p];
    const bool symbol = c == U'.' || c == U'$' || c == U'¢' || c == U'€' || c == U'£';
    if (symbol && p + 1 < s.size() && !detail::is_ascii_digit(s[p + 1])) {
      out += U' ';
      out += s[p + 1];
      p += 2;
    } else {
      out += s[p++];
    }
  }
  return out;
}

// re.sub(r"([^0-9])%", r"\1 ", s): percent signs not preceded by a digit.
Str remove_unattached_percent(const Str& s) {
  Str out;
  out.reserve(s.size());
  for (size_t p = 0; p < s.size();) {
    if (p + 1 < s.size() && !detail::is_ascii_digit(s[p]) && s[p + 1] == U'%') {
      out += s[p];
      out += U' ';
      p += 2;
    } else {
      out += s[p++];
    }
  }
  return out;
}

}  // namespace

std::string normalize_basic(std::string_view text, bool remove_diacritics, bool split_letters) {
  Str s = detail::python_lower(detail::utf8_to_u32(text));
  s = remove_parenthesized(remove_bracketed(s));
  s = remove_diacritics ? remove_symbols_and_diacritics(s, U"") : remove_symbols(s);
  s = detail::python_lower(s);
  if (split_letters) {
    Str joined;
    const auto clusters = detail::grapheme_clusters(s);
    for (size_t i = 0; i < clusters.size(); ++i) {
      if (i > 0) joined += U' ';
      joined += clusters[i];
    }
    s = std::move(joined);
  }
  return detail::u32_to_utf8(detail::collapse_whitespace(s));
}

EnglishNormalizer::EnglishNormalizer(const std::string& spelling_json) {
  std::ifstream in(spelling_json, std::ios::binary);
  if (!in) throw IoError("cannot open the English spelling map " + spelling_json);
  nlohmann::json map;
  try {
    map = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw IoError("cannot parse the English spelling map " + spelling_json + ": " + e.what());
  }
  if (!map.is_object()) throw IoError("the English spelling map " + spelling_json + " is not a JSON object");
  spelling_.reserve(map.size());
  for (const auto& [british, american] : map.items()) {
    if (!american.is_string()) {
      throw IoError("the English spelling map " + spelling_json + " maps '" + british + "' to a non-string");
    }
    spelling_.emplace(british, american.get<std::string>());
  }
}

std::string EnglishNormalizer::operator()(std::string_view text) const {
  Str s = detail::python_lower(detail::utf8_to_u32(text));
  s = remove_parenthesized(remove_bracketed(s));
  s = join_apostrophes(remove_fillers(s));
  for (const Replacer& r : kReplacers) {
    s = replace_literal(s, r.pattern, r.replacement, r.boundary_before, /*boundary_after=*/true);
  }
  s = remove_periods(remove_digit_commas(s));
  s = remove_symbols_and_diacritics(s, U".%$¢€£");  // keep the symbols numbers use

  s = detail::normalize_english_numbers(s);

  // British to American spelling, word by word (this also collapses whitespace, as str.split() does).
  std::string spelled;
  bool first = true;
  for (const Str& word : detail::split_whitespace(s)) {
    if (!first) spelled += ' ';
    first = false;
    const std::string utf8 = detail::u32_to_utf8(word);
    const auto it = spelling_.find(utf8);
    spelled += it == spelling_.end() ? utf8 : it->second;
  }
  s = detail::utf8_to_u32(spelled);

  s = remove_unattached_percent(remove_unattached_prefixes(s));
  return detail::u32_to_utf8(detail::collapse_whitespace(s));
}

namespace {

// Levenshtein distance between two sequences (unit costs), in O(min) memory.
template <typename T>
long edit_distance(const std::vector<T>& ref, const std::vector<T>& hyp) {
  std::vector<long> row(hyp.size() + 1), next(hyp.size() + 1);
  for (size_t j = 0; j <= hyp.size(); ++j) row[j] = static_cast<long>(j);
  for (size_t i = 1; i <= ref.size(); ++i) {
    next[0] = static_cast<long>(i);
    for (size_t j = 1; j <= hyp.size(); ++j) {
      const long substitute = row[j - 1] + (ref[i - 1] == hyp[j - 1] ? 0 : 1);
      next[j] = std::min({substitute, row[j] + 1, next[j - 1] + 1});
    }
    std::swap(row, next);
  }
  return row[hyp.size()];
}

}  // namespace

ErrorCounts word_errors(std::string_view reference, std::string_view hypothesis) {
  // Words become small integers so the O(n*m) loop compares ints, not strings.
  std::unordered_map<Str, int> ids;
  auto encode = [&ids](std::string_view text) {
    std::vector<int> out;
    for (Str& w : detail::split_whitespace(detail::utf8_to_u32(text))) {
      out.push_back(ids.emplace(std::move(w), static_cast<int>(ids.size())).first->second);
    }
    return out;
  };
  const std::vector<int> ref = encode(reference);
  const std::vector<int> hyp = encode(hypothesis);
  return {edit_distance(ref, hyp), static_cast<long>(ref.size())};
}

ErrorCounts char_errors(std::string_view reference, std::string_view hypothesis) {
  auto code_points = [](std::string_view text) {
    std::vector<char32_t> out;
    for (char32_t c : detail::utf8_to_u32(text)) {
      if (!is_space(c)) out.push_back(c);
    }
    return out;
  };
  const std::vector<char32_t> ref = code_points(reference);
  const std::vector<char32_t> hyp = code_points(hypothesis);
  return {edit_distance(ref, hyp), static_cast<long>(ref.size())};
}

}  // namespace wisp::text
