// Tokenizer: encode/decode against tiktoken goldens (tools/fixtures/make_tokenizer_fixtures.py), special
// token layout of each vocabulary generation, and the vocabulary loaders' handling of bad input.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "support/test_paths.h"
#include "tokenizer/vocabulary.h"
#include "wisp/errors.h"

namespace wisp::tokenizer {
namespace {

namespace fs = std::filesystem;

std::string assets_dir() { return test::shared_data() + "/whisper_assets"; }
std::string gpt2_path() { return assets_dir() + "/gpt2.tiktoken"; }
std::string multilingual_path() { return assets_dir() + "/multilingual.tiktoken"; }
std::string fixture_path() { return test::fixtures_dir() + "/tokenizer/encode_cases.json"; }

std::vector<std::string> full_vocabulary(const std::string& tiktoken_path, int num_languages) {
  std::vector<std::string> tokens = load_tiktoken(tiktoken_path);
  for (auto& t : special_token_texts(num_languages)) tokens.push_back(std::move(t));
  return tokens;
}

Tokenizer make_tokenizer(const std::string& tiktoken_path, int num_languages) {
  std::vector<std::string> tokens = full_vocabulary(tiktoken_path, num_languages);
  SpecialTokens special = find_special_tokens(tokens);
  return Tokenizer(std::move(tokens), special);
}

// Both tokenizers are built once: loading 50k tokens per test would dominate the run time.
class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::exists(gpt2_path()) || !test::exists(multilingual_path())) return;
    gpt2_ = std::make_unique<Tokenizer>(make_tokenizer(gpt2_path(), 99));
    multilingual_ = std::make_unique<Tokenizer>(make_tokenizer(multilingual_path(), 99));
  }
  static void TearDownTestSuite() {
    gpt2_.reset();
    multilingual_.reset();
  }
  void SetUp() override {
    WISP_REQUIRE_PATH(gpt2_path());
    WISP_REQUIRE_PATH(multilingual_path());
  }
  static nlohmann::json fixture() {
    std::ifstream in(fixture_path());
    EXPECT_TRUE(in) << fixture_path();
    return nlohmann::json::parse(in);
  }

  static std::unique_ptr<Tokenizer> gpt2_;
  static std::unique_ptr<Tokenizer> multilingual_;
};
std::unique_ptr<Tokenizer> TokenizerTest::gpt2_;
std::unique_ptr<Tokenizer> TokenizerTest::multilingual_;

TEST_F(TokenizerTest, EncodeMatchesTiktoken) {
  nlohmann::json cases = fixture()["encode"];
  ASSERT_GT(cases.size(), 50u);
  for (const auto& c : cases) {
    std::string text = c["text"];
    EXPECT_EQ(gpt2_->encode(text), c["gpt2"].get<std::vector<int>>()) << "gpt2: \"" << text << "\"";
    EXPECT_EQ(multilingual_->encode(text), c["multilingual"].get<std::vector<int>>())
        << "multilingual: \"" << text << "\"";
  }
}

TEST_F(TokenizerTest, DecodeRoundTrips) {
  for (const auto& c : fixture()["encode"]) {
    std::string text = c["text"];
    EXPECT_EQ(gpt2_->decode(gpt2_->encode(text)), text);
    EXPECT_EQ(multilingual_->decode(multilingual_->encode(text)), text);
  }
}

TEST_F(TokenizerTest, DecodeOfCutCharacterGivesReplacementCharacter) {
  nlohmann::json cases = fixture()["decode_multilingual"];
  int with_replacement = 0;
  for (const auto& c : cases) {
    std::vector<int> ids = c["ids"];
    std::string expected = c["text"];
    EXPECT_EQ(multilingual_->decode(ids), expected) << c["ids"].dump();
    if (expected.find("\xEF\xBF\xBD") != std::string::npos) ++with_replacement;
  }
  EXPECT_GT(with_replacement, 3);

  // By hand: "é" is C3 A9; ids 0..255 are the single bytes, so cut it between two token lists.
  std::vector<int> e = multilingual_->encode("aé");
  std::string bytes;
  for (int id : e) bytes += multilingual_->token_bytes(id);
  ASSERT_EQ(bytes, "a\xC3\xA9");
  std::vector<int> first_half = multilingual_->encode("a");
  first_half.push_back(*[&] {
    for (int id = 0; id < 256; ++id) {
      if (multilingual_->token_bytes(id) == "\xC3") return std::optional<int>(id);
    }
    return std::optional<int>();
  }());
  EXPECT_EQ(multilingual_->decode(first_half), "a\xEF\xBF\xBD");
}

TEST_F(TokenizerTest, EncodeIgnoresSpecialTokenText) {
  // Text that looks like a special token is ordinary text: it must not become id 50257.
  std::vector<int> ids = multilingual_->encode("<|endoftext|>");
  EXPECT_GT(ids.size(), 1u);
  for (int id : ids) EXPECT_LT(id, multilingual_->special().eot);
}

TEST_F(TokenizerTest, LongInputsEncodeQuickly) {
  // One 300 kB pre-token (no spaces) would take minutes with quadratic merging.
  std::string cjk;
  for (int i = 0; i < 100000; ++i) cjk += "字";
  std::string words;
  for (int i = 0; i < 20000; ++i) words += "The quick brown fox, 1234 jumps! ";
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int> a = multilingual_->encode(cjk);
  std::vector<int> b = multilingual_->encode(words);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(multilingual_->decode(a), cjk);
  EXPECT_EQ(multilingual_->decode(b), words);
  EXPECT_LT(seconds, 5.0);
}

TEST_F(TokenizerTest, MultilingualV2SpecialTokens) {
  const SpecialTokens& s = multilingual_->special();
  EXPECT_EQ(s.eot, 50257);
  EXPECT_EQ(s.sot, 50258);
  EXPECT_EQ(s.first_language, 50259);
  EXPECT_EQ(s.num_languages, 99);
  EXPECT_EQ(s.translate, 50358);
  EXPECT_EQ(s.transcribe, 50359);
  EXPECT_EQ(s.sot_lm, 50360);
  EXPECT_EQ(s.sot_prev, 50361);
  EXPECT_EQ(s.no_speech, 50362);
  EXPECT_EQ(s.no_timestamps, 50363);
  EXPECT_EQ(s.timestamp_begin, 50364);
  EXPECT_EQ(multilingual_->vocab_size(), 51865);
  EXPECT_TRUE(multilingual_->multilingual());

  EXPECT_EQ(multilingual_->language_token("en"), 50259);
  EXPECT_EQ(multilingual_->language_token("zh"), 50260);
  EXPECT_EQ(multilingual_->language_token("su"), 50357);
  EXPECT_EQ(multilingual_->language_token("yue"), std::nullopt);  // v3 only
  EXPECT_EQ(multilingual_->language_token("xx"), std::nullopt);
  EXPECT_EQ(multilingual_->language_code(50259), "en");
  EXPECT_EQ(multilingual_->language_code(50261), "de");
  EXPECT_EQ(multilingual_->language_code(s.translate), "");
  EXPECT_EQ(multilingual_->language_code(100), "");
}

TEST_F(TokenizerTest, EnglishOnlySpecialTokens) {
  const SpecialTokens& s = gpt2_->special();
  EXPECT_EQ(s.eot, 50256);
  EXPECT_EQ(s.sot, 50257);
  EXPECT_EQ(s.num_languages, 0);
  EXPECT_EQ(s.first_language, -1);
  EXPECT_EQ(s.translate, 50357);
  EXPECT_EQ(s.transcribe, 50358);
  EXPECT_EQ(s.sot_lm, 50359);
  EXPECT_EQ(s.sot_prev, 50360);
  EXPECT_EQ(s.no_speech, 50361);
  EXPECT_EQ(s.no_timestamps, 50362);
  EXPECT_EQ(s.timestamp_begin, 50363);
  EXPECT_EQ(gpt2_->vocab_size(), 51864);
  EXPECT_FALSE(gpt2_->multilingual());
  EXPECT_EQ(gpt2_->language_token("en"), std::nullopt);
  EXPECT_EQ(gpt2_->language_code(50258), "");
}

TEST_F(TokenizerTest, V3SpecialTokens) {
  std::vector<std::string> tokens = full_vocabulary(multilingual_path(), 100);
  ASSERT_EQ(tokens.size(), 51866u);
  SpecialTokens s = find_special_tokens(tokens);
  EXPECT_EQ(s.eot, 50257);
  EXPECT_EQ(s.sot, 50258);
  EXPECT_EQ(s.num_languages, 100);
  EXPECT_EQ(s.translate, 50359);
  EXPECT_EQ(s.transcribe, 50360);
  EXPECT_EQ(s.sot_prev, 50362);
  EXPECT_EQ(s.no_speech, 50363);
  EXPECT_EQ(s.no_timestamps, 50364);
  EXPECT_EQ(s.timestamp_begin, 50365);
  Tokenizer v3(std::move(tokens), s);
  EXPECT_EQ(v3.language_token("yue"), 50358);
  EXPECT_EQ(v3.language_code(50358), "yue");
}

TEST_F(TokenizerTest, OldHebrewCodeIsAnAlias) {
  std::vector<std::string> tokens = full_vocabulary(multilingual_path(), 99);
  const int he = 50279;
  ASSERT_EQ(tokens[he], "<|he|>");
  tokens[he] = "<|iw|>";
  tokens[multilingual_->special().no_speech] = "<|nocaptions|>";
  SpecialTokens s = find_special_tokens(tokens);
  EXPECT_EQ(s.num_languages, 99);
  EXPECT_EQ(s.no_speech, 50362);
  Tokenizer old(std::move(tokens), s);
  EXPECT_EQ(old.language_token("he"), he);
  EXPECT_EQ(old.language_token("iw"), he);
  EXPECT_EQ(old.language_code(he), "he");
  EXPECT_EQ(multilingual_->language_token("iw"), he);
}

TEST_F(TokenizerTest, DecodeSkipsSpecialsAndDecodeWithTimestampsShowsThem) {
  const SpecialTokens& s = multilingual_->special();
  std::vector<int> text = multilingual_->encode(" Hello there.");
  std::vector<int> ids = {s.sot, s.first_language, s.transcribe, s.timestamp_begin};
  ids.insert(ids.end(), text.begin(), text.end());
  ids.push_back(s.timestamp_begin + 54);
  ids.push_back(s.eot);
  EXPECT_EQ(multilingual_->decode(ids), " Hello there.");
  EXPECT_EQ(multilingual_->decode_with_timestamps(ids),
            "<|startoftranscript|><|en|><|transcribe|><|0.00|> Hello there.<|1.08|><|endoftext|>");
  std::vector<int> bad = {multilingual_->vocab_size()};
  EXPECT_THROW(multilingual_->decode(bad), InvalidArgument);
  EXPECT_THROW(multilingual_->token_bytes(-1), InvalidArgument);
}

TEST(Utf8Test, SanitizeMatchesPythonReplace) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(sanitize_utf8("plain ascii, 字, 😀"), "plain ascii, 字, 😀");
  EXPECT_EQ(sanitize_utf8("\xE4\xB8"), r);
  EXPECT_EQ(sanitize_utf8("\xE4\xB8"
                          "A"),
            r + "A");
  EXPECT_EQ(sanitize_utf8("\xED\xA0\x80"), r + r + r);  // surrogate
  EXPECT_EQ(sanitize_utf8("\xF0\x80\x80"), r + r + r);  // overlong
  EXPECT_EQ(sanitize_utf8("\xC0\xAF"), r + r);
  EXPECT_EQ(sanitize_utf8("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(sanitize_utf8("\xFF"), r);
  EXPECT_EQ(sanitize_utf8("\xF0\x9F\x98"), r);
  EXPECT_EQ(sanitize_utf8("a\x80\x80"
                          "b"),
            "a" + r + r + "b");
  EXPECT_EQ(sanitize_utf8("\xE0\x80"), r + r);
  EXPECT_EQ(sanitize_utf8("\xF0\x9F\x98\x80\xF0\x9F"), "😀" + r);
}

TEST(VocabularyTest, ByteLevelMapping) {
  EXPECT_EQ(byte_level_to_bytes("\xC4\xA0hello"), " hello");  // Ġ
  EXPECT_EQ(byte_level_to_bytes("\xC4\x8A"), "\n");           // Ċ
  EXPECT_EQ(byte_level_to_bytes("<|en|>"), "<|en|>");
  EXPECT_EQ(byte_level_to_bytes(""), "");
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(byte_level_to_bytes(bytes_to_byte_level(all)), all);
  EXPECT_EQ(bytes_to_byte_level(" "), "\xC4\xA0");
  EXPECT_THROW(byte_level_to_bytes("\xE2\x82\xAC"), InvalidArgument);  // € is outside the mapping
  EXPECT_THROW(byte_level_to_bytes(" "), InvalidArgument);             // space itself is remapped
  EXPECT_THROW(byte_level_to_bytes("\xFF"), InvalidArgument);          // not UTF-8
}

TEST(VocabularyTest, SpecialTokenTexts) {
  std::vector<std::string> v2 = special_token_texts(99);
  ASSERT_EQ(v2.size(), 2u + 99 + 6 + 1501);
  EXPECT_EQ(v2[0], "<|endoftext|>");
  EXPECT_EQ(v2[1], "<|startoftranscript|>");
  EXPECT_EQ(v2[2], "<|en|>");
  EXPECT_EQ(v2[100], "<|su|>");
  EXPECT_EQ(v2[101], "<|translate|>");
  EXPECT_EQ(v2[106], "<|notimestamps|>");
  EXPECT_EQ(v2[107], "<|0.00|>");
  EXPECT_EQ(v2[107 + 54], "<|1.08|>");
  EXPECT_EQ(v2[107 + 1], "<|0.02|>");
  EXPECT_EQ(v2.back(), "<|30.00|>");
  EXPECT_EQ(special_token_texts(100)[101], "<|yue|>");
  EXPECT_EQ(Tokenizer::language_codes().size(), 100u);
  EXPECT_EQ(Tokenizer::language_codes().front(), "en");
  EXPECT_EQ(Tokenizer::language_codes()[2], "de");
  EXPECT_EQ(Tokenizer::language_codes().back(), "yue");
  EXPECT_THROW(special_token_texts(101), InvalidArgument);
  EXPECT_THROW(special_token_texts(-1), InvalidArgument);
}

TEST(VocabularyTest, FindSpecialTokensRejectsIncompleteVocabularies) {
  std::vector<std::string> tokens = {"a", "b"};
  EXPECT_THROW(find_special_tokens(tokens), InvalidArgument);
  std::vector<std::string> specials = special_token_texts(99);
  tokens.insert(tokens.end(), specials.begin(), specials.end());
  EXPECT_NO_THROW(find_special_tokens(tokens));
  for (std::string missing : {"<|endoftext|>", "<|startoftranscript|>", "<|0.00|>", "<|30.00|>"}) {
    std::vector<std::string> broken = tokens;
    std::erase(broken, missing);
    EXPECT_THROW(find_special_tokens(broken), InvalidArgument) << missing;
  }
}

// CTranslate2 stores the vocabulary as byte-level strings; once converted it must be the reference's
// vocabulary, except that older conversions call <|nospeech|> <|nocaptions|> and <|he|> <|iw|>.
void expect_same_vocabulary(const std::string& vocabulary_txt, const std::string& tiktoken_path) {
  std::vector<std::string> ct2 = load_byte_level_vocabulary(vocabulary_txt);
  std::vector<std::string> ref = full_vocabulary(tiktoken_path, 99);
  ASSERT_EQ(ct2.size(), ref.size());
  SpecialTokens a = find_special_tokens(ct2);
  SpecialTokens b = find_special_tokens(ref);
  for (size_t i = 0; i < ref.size(); ++i) {
    if (static_cast<int>(i) == b.no_speech && ct2[i] == "<|nocaptions|>") continue;
    if (ref[i] == "<|he|>" && ct2[i] == "<|iw|>") continue;
    ASSERT_EQ(ct2[i], ref[i]) << "token " << i;
  }
  EXPECT_EQ(a.eot, b.eot);
  EXPECT_EQ(a.sot, b.sot);
  EXPECT_EQ(a.first_language, b.first_language);
  EXPECT_EQ(a.num_languages, b.num_languages);
  EXPECT_EQ(a.translate, b.translate);
  EXPECT_EQ(a.transcribe, b.transcribe);
  EXPECT_EQ(a.sot_lm, b.sot_lm);
  EXPECT_EQ(a.sot_prev, b.sot_prev);
  EXPECT_EQ(a.no_speech, b.no_speech);
  EXPECT_EQ(a.no_timestamps, b.no_timestamps);
  EXPECT_EQ(a.timestamp_begin, b.timestamp_begin);
}

TEST(VocabularyTest, Ct2MultilingualVocabularyMatchesTiktoken) {
  const std::string vocab = "/tmp/models/base-gym/vocabulary.txt";
  WISP_REQUIRE_PATH(vocab);
  WISP_REQUIRE_PATH(multilingual_path());
  expect_same_vocabulary(vocab, multilingual_path());
}

TEST(VocabularyTest, Ct2EnglishVocabularyMatchesTiktoken) {
  const std::string vocab = "/tmp/models/tiny.en/vocabulary.txt";
  WISP_REQUIRE_PATH(vocab);
  WISP_REQUIRE_PATH(gpt2_path());
  expect_same_vocabulary(vocab, gpt2_path());
}

class BadFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("wisp_tokenizer_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& contents) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << contents;
    return path;
  }
  fs::path dir_;
};

TEST_F(BadFileTest, LoadTiktoken) {
  EXPECT_THROW(load_tiktoken((dir_ / "missing.tiktoken").string()), IoError);
  EXPECT_THROW(load_byte_level_vocabulary((dir_ / "missing.txt").string()), IoError);

  std::vector<std::string> ok = load_tiktoken(write("ok.tiktoken", "IQ== 0\nIg== 1\n= 2\nSGk= 3\n"));
  EXPECT_EQ(ok, (std::vector<std::string>{"!", "\"", "", "Hi"}));

  EXPECT_THROW(load_tiktoken(write("a", "I*== 0\n")), InvalidArgument);          // bad alphabet
  EXPECT_THROW(load_tiktoken(write("b", "IQ=x 0\n")), InvalidArgument);          // padding inside
  EXPECT_THROW(load_tiktoken(write("c", "IQIQI 0\n")), InvalidArgument);         // impossible length
  EXPECT_THROW(load_tiktoken(write("d", "IQ==\n")), InvalidArgument);            // no rank
  EXPECT_THROW(load_tiktoken(write("e", "IQ== zero\n")), InvalidArgument);       // rank not a number
  EXPECT_THROW(load_tiktoken(write("f", "IQ== 0\nIg== 0\n")), InvalidArgument);  // duplicate rank
  EXPECT_THROW(load_tiktoken(write("g", "IQ== 0\nIg== 2\n")), InvalidArgument);  // gap
  EXPECT_THROW(load_tiktoken(write("h", "")), InvalidArgument);
  EXPECT_THROW(load_byte_level_vocabulary(write("i", "ok\n\xE2\x82\xAC\n")), InvalidArgument);
}

TEST(TokenizerCtorTest, RejectsInconsistentSpecials) {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.emplace_back(1, static_cast<char>(b));
  std::vector<std::string> specials = special_token_texts(0);
  tokens.insert(tokens.end(), specials.begin(), specials.end());
  SpecialTokens s = find_special_tokens(tokens);
  EXPECT_NO_THROW(Tokenizer(tokens, s));
  SpecialTokens bad = s;
  bad.eot = static_cast<int>(tokens.size()) + 1;
  EXPECT_THROW(Tokenizer(tokens, bad), InvalidArgument);
  bad = s;
  bad.timestamp_begin = -1;
  EXPECT_THROW(Tokenizer(tokens, bad), InvalidArgument);
  std::vector<std::string> no_bytes(tokens.begin() + 1, tokens.end());  // byte 0 missing
  EXPECT_THROW(Tokenizer(no_bytes, find_special_tokens(no_bytes)), InvalidArgument);
}

}  // namespace
}  // namespace wisp::tokenizer
