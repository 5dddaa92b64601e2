// The reference's EnglishNumberNormalizer (whisper/normalizers/english.py): spelled-out numbers to digits,
// ordinals and plurals kept as suffixes, currency words to symbols, "percent" to '%'.
#pragma once

#include <string>
#include <string_view>

namespace wisp::text::detail {

// EnglishNumberNormalizer.__call__ on already lower-cased, symbol-stripped text.
std::u32string normalize_english_numbers(std::u32string_view s);

}  // namespace wisp::text::detail
