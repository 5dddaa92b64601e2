// The normalizers against the reference's output (tests/fixtures/normalizers.json, written by
// tools/fixtures/make_normalizer_fixtures.py), and the error counts behind WER/CER.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "support/test_paths.h"
#include "text/assets.h"
#include "text/normalizers.h"
#include "wisp/errors.h"

namespace {

using wisp::text::char_errors;
using wisp::text::EnglishNormalizer;
using wisp::text::normalize_basic;
using wisp::text::word_errors;

std::string english_json() { return wisp::test::source_dir() + "/third_party/whisper_normalizers/english.json"; }

nlohmann::json load_fixture() {
  std::ifstream in(wisp::test::fixtures_dir() + "/normalizers.json");
  return nlohmann::json::parse(in);
}

TEST(TextNormalizers, MatchReferenceByteForByte) {
  const std::string fixture = wisp::test::fixtures_dir() + "/normalizers.json";
  WISP_REQUIRE_PATH(fixture);
  WISP_REQUIRE_PATH(english_json());
  const EnglishNormalizer english(english_json());
  const nlohmann::json cases = load_fixture().at("cases");
  ASSERT_GT(cases.size(), 500u);
  int passed = 0;
  for (const auto& c : cases) {
    const std::string input = c.at("input");
    const std::string expected = c.at("expected");
    const bool diacritics = c.at("remove_diacritics");
    const bool split = c.at("split_letters");
    const std::string got =
        c.at("normalizer") == "english" ? english(input) : normalize_basic(input, diacritics, split);
    EXPECT_EQ(got, expected) << c.at("normalizer") << " diacritics=" << diacritics << " split=" << split
                             << " input: " << input;
    passed += got == expected;
  }
  std::cout << passed << "/" << cases.size() << " reference cases match\n";
}

TEST(TextNormalizers, SpotChecks) {
  WISP_REQUIRE_PATH(english_json());
  const EnglishNormalizer english(english_json());
  EXPECT_EQ(english("Twenty five dollars and fifty cents, Mr. Smith's colour."), "$25.50 mister smith is color");
  EXPECT_EQ(english("[music] uh I won't (laughs) go"), "i will not go");
  EXPECT_EQ(normalize_basic("¡Hola, señor! [risas]"), " hola señor ");
  EXPECT_EQ(normalize_basic("¡Hola, señor!", /*remove_diacritics=*/true), " hola senor ");
  EXPECT_EQ(normalize_basic("你好，世界", false, /*split_letters=*/true), "你 好 世 界");
}

TEST(TextNormalizers, InvalidUtf8BecomesReplacementCharacter) {
  // Python would see U+FFFD after decoding with errors="replace"; that is a symbol, so it turns to a space.
  EXPECT_EQ(normalize_basic("ab\xff"
                            "cd"),
            "ab cd");
  EXPECT_EQ(normalize_basic("ab\xe2\x82"
                            "cd"),
            "ab cd");
}

TEST(TextNormalizers, MissingSpellingMapIsIoError) {
  EXPECT_THROW(EnglishNormalizer("/nonexistent/english.json"), wisp::IoError);
}

TEST(TextNormalizers, MalformedSpellingMapIsIoError) {
  const std::string path = testing::TempDir() + "/bad_english.json";
  std::ofstream(path) << "{\"colour\": ";
  EXPECT_THROW(EnglishNormalizer{path}, wisp::IoError);
}

TEST(TextAssets, EnvironmentOverridesEnglishJsonPath) {
  ASSERT_EQ(setenv("WISP_ENGLISH_JSON", "/somewhere/english.json", 1), 0);
  EXPECT_EQ(wisp::text::default_english_json_path(), "/somewhere/english.json");
  ASSERT_EQ(unsetenv("WISP_ENGLISH_JSON"), 0);
  EXPECT_NE(wisp::text::default_english_json_path(), "/somewhere/english.json");
}

TEST(ErrorRates, WordErrors) {
  EXPECT_EQ(word_errors("a b c", "a b c").errors, 0);
  EXPECT_EQ(word_errors("a b c", "a b c").reference, 3);
  EXPECT_EQ(word_errors("a b c", "a x c").errors, 1);      // substitution
  EXPECT_EQ(word_errors("a b c", "a c").errors, 1);        // deletion
  EXPECT_EQ(word_errors("a b c", "a b b c").errors, 1);    // insertion
  EXPECT_EQ(word_errors("a b c d", "b c d e").errors, 2);  // deletion + insertion, not 4 substitutions
  EXPECT_EQ(word_errors("  a\tb\n", "a b").errors, 0);     // any whitespace separates words
  const auto r = word_errors("the cat sat on the mat", "the cat sat on mat");
  EXPECT_EQ(r.errors, 1);
  EXPECT_EQ(r.reference, 6);
}

TEST(ErrorRates, EmptyInputs) {
  EXPECT_EQ(word_errors("", "").errors, 0);
  EXPECT_EQ(word_errors("", "").reference, 0);
  EXPECT_EQ(word_errors("", "a b").errors, 2);
  EXPECT_EQ(word_errors("", "a b").reference, 0);
  EXPECT_EQ(word_errors("a b", "").errors, 2);
  EXPECT_EQ(char_errors("", "ab").errors, 2);
  EXPECT_EQ(char_errors(" ", "").reference, 0);
}

TEST(ErrorRates, CharErrorsCountCodePointsWithoutWhitespace) {
  const auto same = char_errors("你好 世界", "你好世界");
  EXPECT_EQ(same.errors, 0);
  EXPECT_EQ(same.reference, 4);
  EXPECT_EQ(char_errors("你好世界", "你们世界").errors, 1);    // substitution of one 3-byte character
  EXPECT_EQ(char_errors("こんにちは", "こんちは").errors, 1);  // deletion
  EXPECT_EQ(char_errors("abc", "abxc").errors, 1);             // insertion
  EXPECT_EQ(char_errors("é", "e").errors, 1);                  // a precomposed letter is one code point
}

}  // namespace
