// Output writers: the exact layouts of the reference CLI (expected texts were checked against
// whisper/utils.py on the same transcript) and the atomic file write.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pipeline/writers.h"
#include "wisp/errors.h"
#include "wisp/transcript.h"

namespace wisp::pipeline {
namespace {

namespace fs = std::filesystem;

// 2.0625 s is exactly 2062.5 ms: Python's round() takes it to the even 2062, so must we. The last
// segment is past one hour, and its text is padded with Unicode spaces that str.strip() removes.
Transcript sample() {
  Transcript t;
  t.language = "fr";
  t.duration = 3730.0;
  Segment a;
  a.id = 0;
  a.seek = 0;
  a.start = 0.0;
  a.end = 2.0625;
  a.text = " Hello world.";
  a.tokens = {50364, 2425, 1002, 13, 50467};
  a.temperature = 0.0;
  a.avg_logprob = -0.25;
  a.compression_ratio = 1.5;
  a.no_speech_prob = 0.125;
  Segment b;
  b.id = 1;
  b.start = 2.0625;
  b.end = 5.123;
  b.text =
      " \xC3\x87"
      "a va? \xE4\xBD\xA0\xE5\xA5\xBD --> next\tcol ";  // " Ça va? 你好 --> next\tcol "
  b.temperature = 0.2;
  Segment c;
  c.id = 2;
  c.seek = 366000;
  c.start = 3661.25;
  c.end = 3725.5;
  c.text = "\xE3\x80\x80 late one\xC2\xA0";  // ideographic space ... no-break space
  t.segments = {a, b, c};
  return t;
}

TEST(WritersTest, Formats) {
  EXPECT_EQ(output_formats(), (std::vector<std::string>{"txt", "vtt", "srt", "tsv", "json"}));
}

TEST(WritersTest, TranscriptTextJoinsSegments) {
  EXPECT_EQ(sample().text(),
            " Hello world. \xC3\x87"
            "a va? \xE4\xBD\xA0\xE5\xA5\xBD --> next\tcol \xE3\x80\x80 late one\xC2\xA0");
  EXPECT_EQ(Transcript{}.text(), "");
}

TEST(WritersTest, Txt) {
  EXPECT_EQ(render(sample(), "txt"),
            "Hello world.\n"
            "\xC3\x87"
            "a va? \xE4\xBD\xA0\xE5\xA5\xBD --> next\tcol\n"
            "late one\n");
}

TEST(WritersTest, Vtt) {
  EXPECT_EQ(render(sample(), "vtt"),
            "WEBVTT\n\n"
            "00:00.000 --> 00:02.062\nHello world.\n\n"
            "00:02.062 --> 00:05.123\n\xC3\x87"
            "a va? \xE4\xBD\xA0\xE5\xA5\xBD -> next\tcol\n\n"
            "01:01:01.250 --> 01:02:05.500\nlate one\n\n");
}

TEST(WritersTest, Srt) {
  EXPECT_EQ(render(sample(), "srt"),
            "1\n00:00:00,000 --> 00:00:02,062\nHello world.\n\n"
            "2\n00:00:02,062 --> 00:00:05,123\n\xC3\x87"
            "a va? \xE4\xBD\xA0\xE5\xA5\xBD -> next\tcol\n\n"
            "3\n01:01:01,250 --> 01:02:05,500\nlate one\n\n");
}

TEST(WritersTest, Tsv) {
  // TSV keeps "-->" (the reference only defuses it in subtitles) but turns tabs into spaces.
  EXPECT_EQ(render(sample(), "tsv"),
            "start\tend\ttext\n"
            "0\t2062\tHello world.\n"
            "2062\t5123\t\xC3\x87"
            "a va? \xE4\xBD\xA0\xE5\xA5\xBD --> next col\n"
            "3661250\t3725500\tlate one\n");
}

TEST(WritersTest, JsonParsesBack) {
  Transcript t = sample();
  std::string text = render(t, "json");
  // UTF-8 stays UTF-8 rather than \u escapes.
  EXPECT_NE(text.find("\xE4\xBD\xA0\xE5\xA5\xBD"), std::string::npos);
  EXPECT_EQ(text.find("\\u"), std::string::npos);
  EXPECT_EQ(text.rfind("{\"text\":", 0), 0u);  // keys in the reference's order, "text" first

  nlohmann::json j = nlohmann::json::parse(text);
  EXPECT_EQ(j["text"], t.text());
  EXPECT_EQ(j["language"], "fr");
  EXPECT_EQ(j["duration"], 3730.0);
  ASSERT_EQ(j["segments"].size(), 3u);
  const auto& s0 = j["segments"][0];
  EXPECT_EQ(s0.size(), 10u);
  EXPECT_EQ(s0["id"], 0);
  EXPECT_EQ(s0["seek"], 0);
  EXPECT_EQ(s0["start"], 0.0);
  EXPECT_EQ(s0["end"], 2.0625);
  EXPECT_EQ(s0["text"], " Hello world.");
  EXPECT_EQ(s0["tokens"], (std::vector<int>{50364, 2425, 1002, 13, 50467}));
  EXPECT_EQ(s0["temperature"], 0.0);
  EXPECT_EQ(s0["avg_logprob"], -0.25);
  EXPECT_EQ(s0["compression_ratio"], 1.5);
  EXPECT_EQ(s0["no_speech_prob"], 0.125);
  EXPECT_EQ(j["segments"][1]["text"], t.segments[1].text);
  EXPECT_EQ(j["segments"][1]["temperature"], 0.2);
  EXPECT_EQ(j["segments"][2]["seek"], 366000);
  EXPECT_TRUE(j["segments"][1]["tokens"].is_array());
}

TEST(WritersTest, EmptyTranscript) {
  Transcript t;
  EXPECT_EQ(render(t, "txt"), "");
  EXPECT_EQ(render(t, "vtt"), "WEBVTT\n\n");
  EXPECT_EQ(render(t, "srt"), "");
  EXPECT_EQ(render(t, "tsv"), "start\tend\ttext\n");
  nlohmann::json j = nlohmann::json::parse(render(t, "json"));
  EXPECT_TRUE(j["segments"].empty());
}

TEST(WritersTest, InvalidUtf8InJsonIsReplacedNotThrown) {
  Transcript t = sample();
  t.segments[0].text = " bad \xE4\xBD";
  nlohmann::json j = nlohmann::json::parse(render(t, "json"));
  EXPECT_EQ(j["segments"][0]["text"], " bad \xEF\xBF\xBD");
}

TEST(WritersTest, UnknownFormat) {
  EXPECT_THROW(render(sample(), "docx"), InvalidArgument);
  EXPECT_THROW(render(sample(), "all"), InvalidArgument);  // "all" is the caller's to expand
  EXPECT_THROW(render(sample(), ""), InvalidArgument);
}

TEST(WritersTest, NegativeTimestampIsAnError) {
  Transcript t = sample();
  t.segments[0].start = -1.0;
  EXPECT_THROW(render(t, "srt"), InvalidArgument);
}

class AtomicWriteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("wisp_writers_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }
  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  size_t entries(const fs::path& d) const {
    return static_cast<size_t>(std::distance(fs::directory_iterator(d), fs::directory_iterator()));
  }
  fs::path dir_;
};

TEST_F(AtomicWriteTest, WritesAndReplaces) {
  fs::path out = dir_ / "clip.srt";
  write_file_atomic(out.string(), "first");
  EXPECT_EQ(read(out), "first");
  write_file_atomic(out.string(), render(sample(), "srt"));
  EXPECT_EQ(read(out), render(sample(), "srt"));
  write_file_atomic(out.string(), "");
  EXPECT_EQ(read(out), "");
  EXPECT_EQ(entries(dir_), 1u);  // no temporary left beside it
}

TEST_F(AtomicWriteTest, MissingDirectoryIsIoError) {
  fs::path out = dir_ / "no_such_dir" / "clip.txt";
  try {
    write_file_atomic(out.string(), "x");
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(out.string()), std::string::npos) << e.what();
  }
  EXPECT_EQ(entries(dir_), 0u);
}

TEST_F(AtomicWriteTest, FailedRenameLeavesNothingBehind) {
  // The target is a non-empty directory: the temporary is written, the rename fails, and the temporary
  // must be removed. This fails even for root, unlike a permission check.
  fs::path out = dir_ / "clip.txt";
  fs::create_directories(out / "inside");
  EXPECT_THROW(write_file_atomic(out.string(), "x"), IoError);
  EXPECT_EQ(entries(dir_), 1u);
  EXPECT_TRUE(fs::is_directory(out));
}

TEST_F(AtomicWriteTest, UnwritableDirectoryIsIoError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec, fs::perm_options::replace);
  fs::path out = dir_ / "clip.txt";
  EXPECT_THROW(write_file_atomic(out.string(), "x"), IoError);
  fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace);
  EXPECT_EQ(entries(dir_), 0u);
}

}  // namespace
}  // namespace wisp::pipeline
