// The engine file: EngineWriter → EngineFile round trip of a small synthetic model (metadata, a vocabulary of
// arbitrary bytes, f16/f32 tensors at 256-byte alignment), the typed error of each kind of bad file, with the
// file named in the message, and the writer's atomicity.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "format/engine_file.h"
#include "wisp/errors.h"

namespace wisp::format {
namespace {

namespace fs = std::filesystem;
using core::DType;
using core::Shape;
using core::Tensor;

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

Tensor random_tensor(Shape shape, DType dtype, std::mt19937& rng) {
  Tensor t = Tensor::empty(std::move(shape), dtype);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dtype == DType::kF16) {
      t.data<uint16_t>()[i] = core::float_to_half(u(rng));
    } else {
      t.data<float>()[i] = u(rng);
    }
  }
  return t;
}

// Runs `fn`, expecting an exception of type E whose message names `path` and contains `needle`.
template <class E, class Fn>
void expect_error(Fn fn, const std::string& path, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const E& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "message lacks '" << needle << "': " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

class EngineFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("wisp_engine_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);

    std::mt19937 rng(42);
    meta_.name = "synthetic";
    meta_.dims = {80, 7, 1500, 64, 2, 1, 448, 64, 2, 1};
    meta_.suppress_tokens = {1, 2, 7, -1};
    meta_.suppress_tokens_begin = {220, 50256};
    meta_.lang_ids = {};  // an English-only model has none
    meta_.alignment_heads = {{0, 1}, {0, 0}};
    meta_.source = {{"importer", "test"}, {"path", "/nowhere/\"quoted\"\\dir"}};
    // Arbitrary bytes: empty tokens (first, middle and last), invalid UTF-8, embedded NUL, a JSON-hostile
    // quote.
    vocab_ = {"", "hello", std::string("\xff\xfe\x80", 3), std::string("a\0b", 3), "", "\"}\n", "<|endoftext|>", ""};
    // Sizes that are not multiples of the alignment so that padding is exercised: 30, 28, 96 and 2 bytes.
    tensors_ = {{"encoder.a.weight", random_tensor({3, 5}, DType::kF16, rng)},
                {"encoder.a.bias", random_tensor({7}, DType::kF32, rng)},
                {"decoder.b", random_tensor({2, 3, 4}, DType::kF32, rng)},
                {"decoder.c", random_tensor({1}, DType::kF16, rng)},
                {"decoder.big", random_tensor({300, 7}, DType::kF16, rng)}};
  }
  void TearDown() override { fs::remove_all(dir_); }

  EngineWriter make_writer() const {
    EngineWriter w;
    w.set_metadata(meta_);
    w.set_vocabulary(vocab_);
    for (const auto& [name, t] : tensors_) w.add_tensor(name, t);
    return w;
  }
  // Writes the synthetic model and returns its path.
  std::string write_model(const std::string& name = "model.wisp") const {
    const std::string path = (dir_ / name).string();
    make_writer().write(path);
    return path;
  }

  fs::path dir_;
  ModelMetadata meta_;
  std::vector<std::string> vocab_;
  std::vector<std::pair<std::string, Tensor>> tensors_;
};

TEST_F(EngineFileTest, RoundTripKeepsEverything) {
  const std::string path = write_model();
  const EngineFile f = EngineFile::open(path);
  EXPECT_EQ(f.path(), path);

  const ModelMetadata& m = f.metadata();
  EXPECT_EQ(m.name, meta_.name);
  EXPECT_EQ(m.dims.n_mels, 80);
  EXPECT_EQ(m.dims.n_vocab, 7);
  EXPECT_EQ(m.dims.n_audio_ctx, 1500);
  EXPECT_EQ(m.dims.n_audio_state, 64);
  EXPECT_EQ(m.dims.n_audio_head, 2);
  EXPECT_EQ(m.dims.n_audio_layer, 1);
  EXPECT_EQ(m.dims.n_text_ctx, 448);
  EXPECT_EQ(m.dims.n_text_state, 64);
  EXPECT_EQ(m.dims.n_text_head, 2);
  EXPECT_EQ(m.dims.n_text_layer, 1);
  EXPECT_EQ(m.suppress_tokens, meta_.suppress_tokens);
  EXPECT_EQ(m.suppress_tokens_begin, meta_.suppress_tokens_begin);
  EXPECT_EQ(m.lang_ids, meta_.lang_ids);
  EXPECT_EQ(m.alignment_heads, meta_.alignment_heads);
  EXPECT_EQ(m.source, meta_.source);

  ASSERT_EQ(f.vocabulary().size(), vocab_.size());
  for (size_t i = 0; i < vocab_.size(); ++i) EXPECT_EQ(f.vocabulary()[i], vocab_[i]) << "token " << i;

  for (const auto& [name, t] : tensors_) {
    ASSERT_TRUE(f.has(name)) << name;
    const Tensor r = f.tensor(name);
    EXPECT_EQ(r.dtype(), t.dtype()) << name;
    EXPECT_EQ(r.shape(), t.shape()) << name;
    ASSERT_EQ(r.nbytes(), t.nbytes()) << name;
    EXPECT_EQ(std::memcmp(r.raw(), t.raw(), t.nbytes()), 0) << name;
    // Kernels may use aligned vector loads on mapped weights: the address itself must be aligned.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.raw()) % kAlignment, 0u) << name;
  }
  EXPECT_FALSE(f.has("absent"));
  expect_error<ModelError>([&] { f.tensor("absent"); }, path, "absent");

  // Every entry, the vocabulary's included, starts on a 256-byte boundary, has the size its shape implies,
  // lies inside the file and overlaps no other.
  const uint64_t size = fs::file_size(path);
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const TensorEntry& e : f.entries()) {
    EXPECT_EQ(e.offset % kAlignment, 0u) << e.name;
    EXPECT_EQ(e.nbytes, static_cast<uint64_t>(core::shape_numel(e.shape)) * core::dtype_size(e.dtype)) << e.name;
    EXPECT_LE(e.offset + e.nbytes, size) << e.name;
    spans.emplace_back(e.offset, e.offset + e.nbytes);
  }
  EXPECT_EQ(f.entries().size(), tensors_.size() + 2);  // + the vocabulary's bytes and offsets
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) EXPECT_LE(spans[i - 1].second, spans[i].first);
}

TEST_F(EngineFileTest, TensorsOutliveTheFileObject) {
  // Views keep the mapping alive: a tensor taken from a file that has gone out of scope still reads.
  Tensor t;
  {
    const EngineFile f = EngineFile::open(write_model());
    t = f.tensor("decoder.big");
  }
  EXPECT_EQ(std::memcmp(t.raw(), tensors_[4].second.raw(), t.nbytes()), 0);
}

TEST_F(EngineFileTest, NoTensorsAndOnlyEmptyTokens) {
  // The vocabulary's byte tensor is then empty: a zero-byte entry must still lay out and read back.
  EngineWriter w;
  w.set_metadata(meta_);
  w.set_vocabulary({"", "", ""});
  const std::string path = (dir_ / "empty.wisp").string();
  w.write(path);
  const EngineFile f = EngineFile::open(path);
  EXPECT_EQ(f.vocabulary(), (std::vector<std::string>{"", "", ""}));
  EXPECT_EQ(f.entries().size(), 2u);
}

TEST_F(EngineFileTest, RewritingReplacesTheFile) {
  const std::string path = write_model();
  meta_.name = "second";
  write_model();
  EXPECT_EQ(EngineFile::open(path).metadata().name, "second");
  // No temporary file is left beside it.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    ++files;
    EXPECT_EQ(e.path().filename(), "model.wisp");
  }
  EXPECT_EQ(files, 1);
}

TEST_F(EngineFileTest, AddingATensorTwiceIsAnInternalError) {
  EngineWriter w;
  w.add_tensor("x", tensors_[0].second);
  EXPECT_THROW(w.add_tensor("x", tensors_[1].second), InternalError);
}

// ---------------------------------------------------------------- files that are not (good) engine files

TEST_F(EngineFileTest, MissingFileIsIoError) {
  const std::string path = (dir_ / "does-not-exist.wisp").string();
  expect_error<IoError>([&] { EngineFile::open(path); }, path, "cannot open");
}

TEST_F(EngineFileTest, DirectoryIsIoError) {
  const std::string path = (dir_ / "subdir").string();
  fs::create_directories(path);
  expect_error<IoError>([&] { EngineFile::open(path); }, path, "not a regular file");
}

TEST_F(EngineFileTest, EmptyFileIsNotAnEngineFile) {
  const std::string path = (dir_ / "empty").string();
  write_bytes(path, "");
  expect_error<ModelError>([&] { EngineFile::open(path); }, path, "not a wisp engine file");
}

TEST_F(EngineFileTest, RandomBytesAreNotAnEngineFile) {
  std::mt19937 rng(7);
  for (size_t n : {size_t{5}, size_t{24}, size_t{100000}}) {
    std::string bytes(n, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    const std::string path = (dir_ / ("random" + std::to_string(n))).string();
    write_bytes(path, bytes);
    expect_error<ModelError>([&] { EngineFile::open(path); }, path, "not a wisp engine file");
  }
  // Another format's file (a JSON document) likewise.
  const std::string path = (dir_ / "config.json").string();
  write_bytes(path, std::string("{\"model_type\": \"whisper\", \"d_model\": 384}\n"));
  expect_error<ModelError>([&] { EngineFile::open(path); }, path, "not a wisp engine file");
}

TEST_F(EngineFileTest, OtherVersionIsRejectedByNumber) {
  const std::string path = write_model();
  std::string bytes = read_bytes(path);
  const uint32_t version = kVersion + 1;
  std::memcpy(bytes.data() + 8, &version, 4);
  write_bytes(path, bytes);
  expect_error<ModelError>([&] { EngineFile::open(path); }, path, "version " + std::to_string(kVersion + 1));
}

TEST_F(EngineFileTest, TruncatedInTheHeader) {
  const std::string path = write_model();
  const std::string bytes = read_bytes(path);
  for (size_t cut : {size_t{30}, size_t{200}}) {
    write_bytes(path, bytes.substr(0, cut));
    expect_error<ModelError>([&] { EngineFile::open(path); }, path, "truncated");
  }
}

TEST_F(EngineFileTest, TruncatedInTheTensorData) {
  const std::string path = write_model();
  const std::string bytes = read_bytes(path);
  // Cut in the middle of the largest tensor, and one byte short of the end of the last one.
  uint64_t big_mid = 0, last_end = 0;
  for (const TensorEntry& e : EngineFile::open(path).entries()) {
    if (e.name == "decoder.big") big_mid = e.offset + e.nbytes / 2;
    last_end = std::max(last_end, e.offset + e.nbytes);
  }
  ASSERT_GT(big_mid, 0u);
  for (uint64_t cut : {big_mid, last_end - 1}) {
    write_bytes(path, bytes.substr(0, cut));
    expect_error<ModelError>([&] { EngineFile::open(path); }, path, "truncated");
  }
}

TEST_F(EngineFileTest, CorruptHeaderJson) {
  const std::string path = write_model();
  const std::string good = read_bytes(path);
  const size_t header = 24;  // magic, version, reserved, header length
  auto corrupt = [&](size_t at, const std::string& with) {
    std::string bytes = good;
    bytes.replace(at, with.size(), with);
    write_bytes(path, bytes);
  };
  auto find = [&](const std::string& s) {
    const size_t at = good.find(s, header);
    EXPECT_NE(at, std::string::npos) << s;
    return at;
  };

  corrupt(header, "X");  // not JSON at all
  expect_error<ModelError>([&] { EngineFile::open(path); }, path, "corrupt header");

  corrupt(find("\"dims\""), "\"dimz\"");  // a required field missing
  expect_error<ModelError>([&] { EngineFile::open(path); }, path, "corrupt header");

  corrupt(find("\"n_mels\":80"), "\"n_mels\":\"8");  // a field of the wrong type
  expect_error<ModelError>([&] { EngineFile::open(path); }, path, "");

  corrupt(find("\"f16\""), "\"q16\"");  // an unknown tensor dtype
  expect_error<ModelError>([&] { EngineFile::open(path); }, path, "q16");

  // An offset moved off the alignment grid (the header's spacing keeps the length unchanged).
  {
    const size_t at = find("\"offset\":");
    std::string bytes = good;
    size_t digit = at + 9;
    while (bytes[digit + 1] >= '0' && bytes[digit + 1] <= '9') ++digit;  // last digit of the offset
    bytes[digit] = bytes[digit] == '1' ? '2' : '1';
    write_bytes(path, bytes);
    expect_error<ModelError>([&] { EngineFile::open(path); }, path, "");
  }

  // A size that disagrees with the shape.
  {
    const size_t at = find("\"nbytes\":30");
    std::string bytes = good;
    bytes.replace(at, 11, "\"nbytes\":32");
    write_bytes(path, bytes);
    expect_error<ModelError>([&] { EngineFile::open(path); }, path, "inconsistent size");
  }
}

// ---------------------------------------------------------------- atomic write

TEST_F(EngineFileTest, WriteIntoMissingDirectoryIsIoErrorAndLeavesNothing) {
  const fs::path missing = dir_ / "no" / "such" / "dir";
  const std::string path = (missing / "model.wisp").string();
  expect_error<IoError>([&] { make_writer().write(path); }, path, "cannot write");
  EXPECT_FALSE(fs::exists(dir_ / "no"));
  EXPECT_FALSE(fs::exists(path));
}

TEST_F(EngineFileTest, FailedRenameLeavesNoTemporaryAndKeepsTheTarget) {
  // The target is an existing non-empty directory: the data is written, the final rename fails.
  const fs::path target = dir_ / "taken";
  fs::create_directories(target / "inside");
  expect_error<IoError>([&] { make_writer().write(target.string()); }, target.string(), "cannot write");
  EXPECT_TRUE(fs::is_directory(target / "inside"));
  for (const auto& e : fs::directory_iterator(dir_)) EXPECT_EQ(e.path().filename(), "taken");
}

TEST_F(EngineFileTest, FailedWriteKeepsThePreviousFile) {
  const std::string path = write_model();
  const std::string before = read_bytes(path);
  // A directory squatting on the writer's temporary name (path + ".tmp-" + pid) makes the write fail before
  // the rename (permissions would not stop root); the existing model must stay as it was.
  const fs::path squat = path + ".tmp-" + std::to_string(::getpid());
  fs::create_directories(squat);
  meta_.name = "other";
  expect_error<IoError>([&] { make_writer().write(path); }, path, "cannot write");
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(EngineFile::open(path).metadata().name, "synthetic");
}

}  // namespace
}  // namespace wisp::format
