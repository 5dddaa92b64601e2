#include "text/english_numbers.h"

#include <algorithm>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "text/unicode.h"

namespace wisp::text::detail {
namespace {

using Str = std::u32string;

// ---------------------------------------------------------------------------------------------------
// Arbitrary-size non-negative integers as canonical ASCII decimal strings. The reference uses Python ints,
// and "twelve decillion" (10^34) or a long digit string must neither overflow nor lose digits.

Str canonical(Str digits) {
  size_t nz = 0;
  while (nz + 1 < digits.size() && digits[nz] == U'0') ++nz;
  digits.erase(0, nz);
  return digits.empty() ? Str(U"0") : digits;
}

Str to_str(long v) {
  Str out;
  do {
    out.insert(out.begin(), static_cast<char32_t>(U'0' + v % 10));
    v /= 10;
  } while (v > 0);
  return out;
}

Str add(const Str& a, const Str& b) {
  Str out;
  int carry = 0;
  for (size_t i = 0; i < a.size() || i < b.size() || carry; ++i) {
    int d = carry;
    if (i < a.size()) d += static_cast<int>(a[a.size() - 1 - i] - U'0');
    if (i < b.size()) d += static_cast<int>(b[b.size() - 1 - i] - U'0');
    out.push_back(static_cast<char32_t>(U'0' + d % 10));
    carry = d / 10;
  }
  return canonical(Str(out.rbegin(), out.rend()));
}

// a % 10^k for small k.
long low_digits(const Str& a, int k) {
  long v = 0;
  const size_t start = a.size() > static_cast<size_t>(k) ? a.size() - k : 0;
  for (size_t i = start; i < a.size(); ++i) v = v * 10 + static_cast<long>(a[i] - U'0');
  return v;
}

Str pow10(int k) {
  Str out(static_cast<size_t>(k) + 1, U'0');
  out[0] = U'1';
  return out;
}

// value // 1000 * 1000 + (value % 1000) * 10^k: how the reference folds a multiplier into a running
// total ("two thousand three" + "hundred" -> 2300).
Str apply_multiplier(const Str& value, int k) {
  Str before = value.size() > 3 ? value.substr(0, value.size() - 3) + U"000" : Str(U"0");
  const long residual = low_digits(value, 3);
  Str scaled = residual == 0 ? Str(U"0") : to_str(residual) + Str(static_cast<size_t>(k), U'0');
  return add(canonical(before), scaled);
}

// Fraction(text) * 10^k when that is an integer, as a canonical decimal; nullopt when Python's Fraction
// would reject `text` or the product has a denominator. The texts reaching here hold only digits (of any
// script: Fraction accepts what `\d` matches) and dots.
std::optional<Str> fraction_times_pow10(const Str& text, int k) {
  const size_t n = text.size();
  if (n == 0) return std::nullopt;
  if (!(is_digit(text[0]) || (text[0] == U'.' && n > 1 && is_digit(text[1])))) return std::nullopt;
  Str digits;
  size_t i = 0;
  while (i < n && is_digit(text[i])) digits.push_back(static_cast<char32_t>(U'0' + decimal_value(text[i++])));
  int decimals = 0;
  if (i < n && text[i] == U'.') {
    ++i;
    while (i < n && is_digit(text[i])) {
      digits.push_back(static_cast<char32_t>(U'0' + decimal_value(text[i++])));
      ++decimals;
    }
  }
  if (i != n) return std::nullopt;
  if (decimals <= k) {
    digits.append(static_cast<size_t>(k - decimals), U'0');
  } else {
    const size_t drop = static_cast<size_t>(decimals - k);
    for (size_t j = digits.size() - drop; j < digits.size(); ++j) {
      if (digits[j] != U'0') return std::nullopt;
    }
    digits.resize(digits.size() - drop);
  }
  return canonical(digits);
}

// re.match(r"^\d+(\.\d+)?$", s)
bool is_numeric_token(const Str& s) {
  size_t i = 0;
  while (i < s.size() && is_digit(s[i])) ++i;
  if (i == 0) return false;
  if (i == s.size()) return true;
  if (s[i] != U'.') return false;
  const size_t frac = ++i;
  while (i < s.size() && is_digit(s[i])) ++i;
  return i > frac && i == s.size();
}

// ---------------------------------------------------------------------------------------------------
// The reference's word tables, built the same way (so its quirks survive, e.g. "nineth" rather than
// "ninth" is the ordinal of nine, and "tens" is the plural of ten rather than a tens word).

struct Suffixed {
  int value;  // the number, or for multipliers the power of ten
  Str suffix;
};

struct Tables {
  std::unordered_set<Str> zeros{U"o", U"oh", U"zero"};
  std::unordered_map<Str, int> ones;
  std::unordered_map<Str, Suffixed> ones_suffixed;
  std::unordered_map<Str, int> tens;
  std::unordered_map<Str, Suffixed> tens_suffixed;
  std::unordered_map<Str, int> multipliers;  // power of ten
  std::unordered_map<Str, Suffixed> multipliers_suffixed;
  std::unordered_map<Str, Str> preceding_prefixers{
      {U"minus", U"-"}, {U"negative", U"-"}, {U"plus", U"+"}, {U"positive", U"+"}};
  std::unordered_map<Str, Str> following_prefixers{{U"pound", U"£"}, {U"pounds", U"£"}, {U"euro", U"€"},
                                                   {U"euros", U"€"}, {U"dollar", U"$"}, {U"dollars", U"$"},
                                                   {U"cent", U"¢"},  {U"cents", U"¢"}};
  std::unordered_set<char32_t> prefixes{U'-', U'+', U'£', U'€', U'$', U'¢'};
  std::unordered_set<Str> suffixers{U"per", U"percent"};
  std::unordered_set<Str> specials{U"and", U"double", U"triple", U"point"};
  std::unordered_set<Str> words;
  std::unordered_set<Str> decimals;

  Tables() {
    const char32_t* ones_names[] = {U"one",     U"two",       U"three",    U"four",     U"five",
                                    U"six",     U"seven",     U"eight",    U"nine",     U"ten",
                                    U"eleven",  U"twelve",    U"thirteen", U"fourteen", U"fifteen",
                                    U"sixteen", U"seventeen", U"eighteen", U"nineteen"};
    for (int i = 0; i < 19; ++i) ones[ones_names[i]] = i + 1;
    for (const auto& [name, value] : ones) {
      ones_suffixed[name == U"six" ? Str(U"sixes") : name + U"s"] = {value, U"s"};
      if (value > 3 && value != 5 && value != 12) {
        ones_suffixed[name + (name.back() == U't' ? U"h" : U"th")] = {value, U"th"};
      }
    }
    ones_suffixed[U"zeroth"] = {0, U"th"};
    ones_suffixed[U"first"] = {1, U"st"};
    ones_suffixed[U"second"] = {2, U"nd"};
    ones_suffixed[U"third"] = {3, U"rd"};
    ones_suffixed[U"fifth"] = {5, U"th"};
    ones_suffixed[U"twelfth"] = {12, U"th"};

    const char32_t* tens_names[] = {U"twenty", U"thirty",  U"forty",  U"fifty",
                                    U"sixty",  U"seventy", U"eighty", U"ninety"};
    for (int i = 0; i < 8; ++i) {
      const Str name = tens_names[i];
      const int value = 20 + 10 * i;
      tens[name] = value;
      // name.replace("y", ...): every tens word has exactly one 'y', at the end.
      const Str stem = name.substr(0, name.size() - 1);
      tens_suffixed[stem + U"ies"] = {value, U"s"};
      tens_suffixed[stem + U"ieth"] = {value, U"th"};
    }

    const char32_t* mult_names[] = {U"hundred",    U"thousand",    U"million",     U"billion",
                                    U"trillion",   U"quadrillion", U"quintillion", U"sextillion",
                                    U"septillion", U"octillion",   U"nonillion",   U"decillion"};
    for (int i = 0; i < 12; ++i) {
      const Str name = mult_names[i];
      const int power = i == 0 ? 2 : 3 * i;
      multipliers[name] = power;
      multipliers_suffixed[name + U"s"] = {power, U"s"};
      multipliers_suffixed[name + U"th"] = {power, U"th"};
    }

    for (const auto& z : zeros) words.insert(z), decimals.insert(z);
    for (const auto& [k, v] : ones) words.insert(k), decimals.insert(k);
    for (const auto& [k, v] : tens) words.insert(k), decimals.insert(k);
    for (const auto& [k, v] : ones_suffixed) words.insert(k);
    for (const auto& [k, v] : tens_suffixed) words.insert(k);
    for (const auto& [k, v] : multipliers) words.insert(k);
    for (const auto& [k, v] : multipliers_suffixed) words.insert(k);
    for (const auto& [k, v] : preceding_prefixers) words.insert(k);
    for (const auto& [k, v] : following_prefixers) words.insert(k);
    for (const auto& k : suffixers) words.insert(k);
    for (const auto& k : specials) words.insert(k);
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

template <typename Set>
bool in(const Set& set, const Str* word) {
  return word != nullptr && set.count(*word) > 0;
}

// ---------------------------------------------------------------------------------------------------
// process_words: a left-to-right state machine over the words. The pending number (`value`) is a Python
// int or str there, and which one it is changes the result ("one two" concatenates because the str case
// appends), so the type is tracked explicitly.

struct Value {
  bool is_int;  // Python int (then `text` is its canonical decimal form) or str
  Str text;
};

class WordProcessor {
 public:
  explicit WordProcessor(const std::vector<Str>& words) : words_(words) {}

  std::vector<Str> run() {
    const Tables& t = tables();
    bool skip = false;
    for (size_t i = 0; i < words_.size(); ++i) {
      if (skip) {
        skip = false;
        continue;
      }
      const Str* prev = i > 0 ? &words_[i - 1] : nullptr;
      const Str* next = i + 1 < words_.size() ? &words_[i + 1] : nullptr;
      const Str& current = words_[i];

      const bool next_is_numeric = next != nullptr && is_numeric_token(*next);
      const bool has_prefix = t.prefixes.count(current[0]) > 0;
      const Str without_prefix = has_prefix ? current.substr(1) : current;

      if (is_numeric_token(without_prefix)) {
        // Arabic numbers, possibly with a currency sign and decimals.
        const std::optional<Str> integer = fraction_times_pow10(without_prefix, 0);
        if (value_) {
          if (!value_->is_int && value_->text.back() == U'.') {
            // Decimals after "point": concatenate the raw token, sign and all, as the reference does.
            value_->text += current;
            continue;
          }
          output(value_->text);
        }
        if (has_prefix) prefix_ = Str(1, current[0]);
        value_ = integer ? Value{true, *integer} : Value{false, without_prefix};
      } else if (t.words.count(current) == 0) {
        flush();
        output(current);
      } else if (t.zeros.count(current)) {
        value_ = Value{false, or_empty() + U"0"};
      } else if (auto it = t.ones.find(current); it != t.ones.end()) {
        on_ones(it->second, prev);
      } else if (auto it = t.ones_suffixed.find(current); it != t.ones_suffixed.end()) {
        on_ones_suffixed(it->second, prev);
      } else if (auto it = t.tens.find(current); it != t.tens.end()) {
        const int tens = it->second;
        if (!value_) {
          value_ = Value{true, to_str(tens)};
        } else if (!value_->is_int) {
          value_->text += to_str(tens);
        } else if (low_digits(value_->text, 2) == 0) {
          value_->text = add(value_->text, to_str(tens));
        } else {
          value_ = Value{false, value_->text + to_str(tens)};
        }
      } else if (auto it = t.tens_suffixed.find(current); it != t.tens_suffixed.end()) {
        const auto& [tens, suffix] = it->second;
        if (!value_) {
          output(to_str(tens) + suffix);
        } else if (!value_->is_int || low_digits(value_->text, 2) != 0) {
          output(value_->text + to_str(tens) + suffix);
        } else {
          output(add(value_->text, to_str(tens)) + suffix);
        }
      } else if (auto it = t.multipliers.find(current); it != t.multipliers.end()) {
        on_multiplier(it->second);
      } else if (auto it = t.multipliers_suffixed.find(current); it != t.multipliers_suffixed.end()) {
        on_multiplier_suffixed(it->second);
      } else if (auto it = t.preceding_prefixers.find(current); it != t.preceding_prefixers.end()) {
        // A sign applies only when a number follows.
        flush();
        if (in(t.words, next) || next_is_numeric) {
          prefix_ = it->second;
        } else {
          output(current);
        }
      } else if (auto it = t.following_prefixers.find(current); it != t.following_prefixers.end()) {
        // A currency word applies only after a number.
        if (value_) {
          prefix_ = it->second;
          output(value_->text);
        } else {
          output(current);
        }
      } else if (t.suffixers.count(current)) {
        if (!value_) {
          output(current);
        } else if (current == U"per") {
          if (next != nullptr && *next == U"cent") {
            output(value_->text + U"%");
            skip = true;
          } else {
            output(value_->text);
            output(current);
          }
        } else {
          output(value_->text + U"%");
        }
      } else {
        skip = on_special(current, prev, next, next_is_numeric);
      }
    }
    flush();
    return std::move(out_);
  }

 private:
  // output(): prepend the pending sign/currency, emit, and forget the pending number and prefix.
  void output(Str result) {
    if (prefix_) result = *prefix_ + result;
    value_.reset();
    prefix_.reset();
    out_.push_back(std::move(result));
  }

  void flush() {
    if (value_) output(value_->text);
  }

  // Python's `str(value or "")`: the int 0 is falsy, so it contributes nothing.
  Str or_empty() const {
    if (!value_ || (value_->is_int && value_->text == U"0")) return Str();
    return value_->text;
  }

  // The digits a ones word appends to the pending number; `(append, replace_last_zero)` mirrors the
  // reference's branches, shared by the plain and the suffixed ones words.
  Str combine_ones(int ones, const Str* prev) const {
    const Tables& t = tables();
    const Str& v = value_->text;
    if (!value_->is_int || in(t.ones, prev)) {
      // After a tens word the last digit is the tens word's zero ("twenty" "one" as "2" "0" -> "21").
      if (in(t.tens, prev) && ones < 10) return v.substr(0, v.size() - 1) + to_str(ones);
      return v + to_str(ones);
    }
    if (low_digits(v, ones < 10 ? 1 : 2) == 0) return add(v, to_str(ones));
    return v + to_str(ones);
  }

  // Whether combine_ones() yields a Python int (an addition) or a str (a concatenation).
  bool combine_ones_is_int(int ones, const Str* prev) const {
    if (!value_->is_int || in(tables().ones, prev)) return false;
    return low_digits(value_->text, ones < 10 ? 1 : 2) == 0;
  }

  void on_ones(int ones, const Str* prev) {
    if (!value_) {
      value_ = Value{true, to_str(ones)};
      return;
    }
    const bool is_int = combine_ones_is_int(ones, prev);
    value_ = Value{is_int, combine_ones(ones, prev)};
  }

  void on_ones_suffixed(const Suffixed& s, const Str* prev) {
    // Ordinal or plural: the number ends here.
    if (!value_) {
      output(to_str(s.value) + s.suffix);
    } else {
      output(combine_ones(s.value, prev) + s.suffix);
    }
    value_.reset();
  }

  void on_multiplier(int power) {
    if (!value_) {
      value_ = Value{true, pow10(power)};
    } else if (!value_->is_int || value_->text == U"0") {
      // "1.5 million", "oh five hundred": scale the pending text if the result is a whole number.
      if (auto p = fraction_times_pow10(value_->text, power)) {
        value_ = Value{true, *p};
      } else {
        output(value_->text);
        value_ = Value{true, pow10(power)};
      }
    } else {
      value_->text = apply_multiplier(value_->text, power);
    }
  }

  void on_multiplier_suffixed(const Suffixed& s) {
    if (!value_) {
      output(pow10(s.value) + s.suffix);
    } else if (!value_->is_int) {
      if (auto p = fraction_times_pow10(value_->text, s.value)) {
        output(*p + s.suffix);
      } else {
        output(value_->text);
        output(pow10(s.value) + s.suffix);
      }
    } else {
      output(apply_multiplier(value_->text, s.value) + s.suffix);
    }
    value_.reset();
  }

  // "and", "double", "triple", "point". Returns whether the next word was consumed.
  bool on_special(const Str& current, const Str* prev, const Str* next, bool next_is_numeric) {
    const Tables& t = tables();
    if (!in(t.words, next) && !next_is_numeric) {
      // Special handling only when the next word can be numeric.
      flush();
      output(current);
    } else if (current == U"and") {
      // "and" after hundreds, thousands, ... is dropped ("one hundred and five" -> 105).
      if (!in(t.multipliers, prev)) {
        flush();
        output(current);
      }
    } else if (current == U"double" || current == U"triple") {
      if (in(t.ones, next) || in(t.zeros, next)) {
        const int repeats = current == U"double" ? 2 : 3;
        auto it = t.ones.find(*next);
        const Str digit = to_str(it == t.ones.end() ? 0 : it->second);
        Str text = or_empty();
        for (int r = 0; r < repeats; ++r) text += digit;
        value_ = Value{false, text};
        return true;
      }
      flush();
      output(current);
    } else if (in(t.decimals, next) || next_is_numeric) {  // "point"
      value_ = Value{false, or_empty() + U"."};
    }
    // Otherwise ("point" before a non-decimal number word) the reference drops the word.
    return false;
  }

  const std::vector<Str>& words_;
  std::optional<Value> value_;
  std::optional<Str> prefix_;
  std::vector<Str> out_;
};

// ---------------------------------------------------------------------------------------------------
// preprocess / postprocess: the reference's regex substitutions, as scans with the same semantics.

// \band\s+a\s+half\b at p: the end of the match, or 0.
size_t match_and_a_half(std::u32string_view s, size_t p) {
  if (!at_word_boundary(s, p) || s.compare(p, 3, U"and") != 0) return 0;
  size_t q = p + 3;
  for (const std::u32string_view word : {std::u32string_view(U"a"), std::u32string_view(U"half")}) {
    const size_t spaces = q;
    while (q < s.size() && is_space(s[q])) ++q;
    if (q == spaces || s.compare(q, word.size(), word) != 0) return 0;
    q += word.size();
  }
  return at_word_boundary(s, q) ? q : 0;
}

bool is_ascii_lower(char32_t c) { return c >= U'a' && c <= U'z'; }

Str preprocess(std::u32string_view s) {
  const Tables& t = tables();
  // "<number> and a half" -> "<number> point five" (re.split on the phrase, then rejoin).
  std::vector<Str> segments;
  size_t seg_start = 0;
  for (size_t p = 0; p < s.size();) {
    if (const size_t end = match_and_a_half(s, p)) {
      segments.emplace_back(s.substr(seg_start, p - seg_start));
      p = seg_start = end;
    } else {
      ++p;
    }
  }
  segments.emplace_back(s.substr(seg_start));

  Str joined;
  bool first = true;
  auto append = [&](const Str& part) {
    if (!first) joined += U' ';
    joined += part;
    first = false;
  };
  for (size_t i = 0; i < segments.size(); ++i) {
    const std::vector<Str> seg_words = split_whitespace(segments[i]);
    if (seg_words.empty()) continue;
    append(segments[i]);
    if (i + 1 < segments.size()) {
      const Str& last_word = seg_words.back();
      const bool numeric = t.decimals.count(last_word) || t.multipliers.count(last_word);
      append(numeric ? U"point five" : U"and a half");
    }
  }

  // A space at letter/digit boundaries: ([a-z])([0-9]) then ([0-9])([a-z]).
  auto space_between = [](const Str& in, auto left, auto right) {
    Str out;
    out.reserve(in.size());
    for (size_t p = 0; p < in.size();) {
      if (p + 1 < in.size() && left(in[p]) && right(in[p + 1])) {
        out += in[p];
        out += U' ';
        out += in[p + 1];
        p += 2;
      } else {
        out += in[p++];
      }
    }
    return out;
  };
  Str spaced = space_between(joined, is_ascii_lower, is_ascii_digit);
  spaced = space_between(spaced, is_ascii_digit, is_ascii_lower);

  // ...but glue back what could be a suffix: ([0-9])\s+(st|nd|rd|th|s)\b -> \1\2.
  static const std::u32string_view kSuffixes[] = {U"st", U"nd", U"rd", U"th", U"s"};
  Str out;
  out.reserve(spaced.size());
  for (size_t p = 0; p < spaced.size();) {
    bool matched = false;
    if (is_ascii_digit(spaced[p])) {
      size_t q = p + 1;
      while (q < spaced.size() && is_space(spaced[q])) ++q;
      if (q > p + 1) {
        for (const auto suffix : kSuffixes) {
          if (spaced.compare(q, suffix.size(), suffix) == 0 && at_word_boundary(spaced, q + suffix.size())) {
            out += spaced[p];
            out += suffix;
            p = q + suffix.size();
            matched = true;
            break;
          }
        }
      }
    }
    if (!matched) out += spaced[p++];
  }
  return out;
}

bool is_currency(char32_t c) { return c == U'€' || c == U'£' || c == U'$'; }

size_t ascii_digit_run(std::u32string_view s, size_t p) {
  size_t q = p;
  while (q < s.size() && is_ascii_digit(s[q])) ++q;
  return q - p;
}

// [0-9]{1,2}\b at p: the number of digits matched (greedy, backing off to one), or 0.
size_t match_one_or_two_digits(std::u32string_view s, size_t p) {
  const size_t run = std::min<size_t>(ascii_digit_run(s, p), 2);
  for (size_t len = run; len >= 1; --len) {
    if (at_word_boundary(s, p + len)) return len;
  }
  return 0;
}

Str two_digit_cents(std::u32string_view digits) {
  const long cents = low_digits(Str(digits), 2);
  return Str(1, static_cast<char32_t>(U'0' + cents / 10)) + static_cast<char32_t>(U'0' + cents % 10);
}

Str postprocess(std::u32string_view s) {
  // "$2 and ¢7" -> "$2.07": ([€£$])([0-9]+) (?:and )?¢([0-9]{1,2})\b
  Str a;
  for (size_t p = 0; p < s.size();) {
    if (is_currency(s[p])) {
      const size_t int_len = ascii_digit_run(s, p + 1);
      size_t q = p + 1 + int_len;
      if (int_len > 0 && q < s.size() && s[q] == U' ') {
        ++q;
        if (s.compare(q, 4, U"and ") == 0) q += 4;
        if (q < s.size() && s[q] == U'¢') {
          if (const size_t cents_len = match_one_or_two_digits(s, q + 1)) {
            a += s.substr(p, 1 + int_len);
            a += U'.';
            a += two_digit_cents(s.substr(q + 1, cents_len));
            p = q + 1 + cents_len;
            continue;
          }
        }
      }
    }
    a += s[p++];
  }

  // "$0.07" -> "¢7": [€£$]0.([0-9]{1,2})\b, where '.' is any character but a newline.
  Str b;
  for (size_t p = 0; p < a.size();) {
    if (is_currency(a[p]) && p + 2 < a.size() && a[p + 1] == U'0' && a[p + 2] != U'\n') {
      if (const size_t len = match_one_or_two_digits(a, p + 3)) {
        b += U'¢';
        b += to_str(low_digits(a.substr(p + 3, len), 2));
        p += 3 + len;
        continue;
      }
    }
    b += a[p++];
  }

  // "1" and "1s" as words read "one"/"ones": \b1(s?)\b.
  Str c;
  for (size_t p = 0; p < b.size();) {
    if (b[p] == U'1' && at_word_boundary(b, p)) {
      if (p + 1 < b.size() && b[p + 1] == U's' && at_word_boundary(b, p + 2)) {
        c += U"ones";
        p += 2;
        continue;
      }
      if (at_word_boundary(b, p + 1)) {
        c += U"one";
        p += 1;
        continue;
      }
    }
    c += b[p++];
  }
  return c;
}

}  // namespace

std::u32string normalize_english_numbers(std::u32string_view s) {
  const std::vector<Str> words = split_whitespace(preprocess(s));
  Str joined;
  const std::vector<Str> processed = WordProcessor(words).run();
  for (size_t i = 0; i < processed.size(); ++i) {
    if (i > 0) joined += U' ';
    joined += processed[i];
  }
  return postprocess(joined);
}

}  // namespace wisp::text::detail
