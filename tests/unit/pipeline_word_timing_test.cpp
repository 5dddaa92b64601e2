// Word timestamps: the DTW and median filter of the alignment on hand-made matrices (expected paths from
// the reference's dtw_cpu), punctuation merging, word splitting, the anomaly score, the subtitle writers'
// word options (texts written by the reference's whisper/utils.py, tools/fixtures/make_word_writer_fixtures.py),
// and end to end: the models' cross-attention + align_words on faster-whisper's own windows and tokens
// against its word timestamps (tools/reference/ref_words.py → tests/fixtures/model/ref_words_<model>.json).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "audio/mel.h"
#include "model/whisper.h"
#include "ops/ops.h"
#include "pipeline/word_timing.h"
#include "pipeline/writers.h"
#include "support/test_paths.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocabulary.h"
#include "wisp/audio.h"
#include "wisp/errors.h"

namespace wisp::pipeline {
namespace {

using nlohmann::json;
using Path = std::vector<std::pair<int, int>>;

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return json::parse(in);
}

// ---- DTW and median filter ----

// The reference minimises the cost of -x; x is given as the matrix of attention "similarities".
Path dtw(const std::vector<std::vector<float>>& rows) {
  std::vector<float> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return negative_dtw(flat, static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows.front().size()));
}

TEST(WordTimingDtw, FollowsTheStrongDiagonal) {
  EXPECT_EQ(dtw({{0.9f, 0.1f, 0.0f, 0.0f}, {0.1f, 0.8f, 0.7f, 0.1f}, {0.0f, 0.1f, 0.2f, 0.9f}}),
            (Path{{0, 0}, {1, 0}, {1, 1}, {1, 2}, {2, 2}, {2, 3}}));
  EXPECT_EQ(dtw({{0.2f, 1.5f, 0.3f, -0.4f, 0.1f},
                 {0.5f, -0.2f, 2.0f, 0.7f, 0.3f},
                 {-1.0f, 0.4f, 0.6f, 1.8f, 0.2f},
                 {0.3f, 0.1f, -0.5f, 0.9f, 2.5f}}),
            (Path{{0, 0}, {0, 1}, {0, 2}, {1, 2}, {1, 3}, {2, 3}, {3, 3}, {3, 4}}));
}

TEST(WordTimingDtw, TiesTakeTheHorizontalStep) {
  // Equal costs fall to the horizontal step, even when the diagonal ties with the vertical one.
  EXPECT_EQ(dtw({{1, 0, 0}, {0, 0, 1}}), (Path{{0, 0}, {1, 0}, {1, 1}, {1, 2}}));
  EXPECT_EQ(dtw({{5, 0, 0}, {0, 5, 0}, {0, 0, 5}}), (Path{{0, 0}, {1, 0}, {1, 1}, {2, 1}, {2, 2}}));
}

TEST(WordTimingDtw, SingleRowAndColumn) {
  EXPECT_EQ(dtw({{1, 2, 3}}), (Path{{0, 0}, {0, 1}, {0, 2}}));
  EXPECT_EQ(dtw({{1}, {2}, {3}}), (Path{{0, 0}, {1, 0}, {2, 0}}));
}

TEST(WordTimingMedianFilter, ReflectPadding) {
  const std::vector<float> x = {1, 5, 2, 8, 3, 9, 4};
  EXPECT_EQ(median_filter(x, 1, 7, 3), (std::vector<float>{5, 2, 5, 3, 8, 4, 9}));
  const std::vector<float> y = {0.5f, -1, 3, 2.5f, 7, -2, 4, 1, 0};
  EXPECT_EQ(median_filter(y, 1, 9, 7), (std::vector<float>{2.5f, 2.5f, 0.5f, 2.5f, 2.5f, 2.5f, 1, 1, 1}));
}

TEST(WordTimingMedianFilter, RowsAreIndependentAndShortRowsPassThrough) {
  const std::vector<float> two = {1, 5, 2, 8, 3, 9, 4, /**/ 4, 9, 3, 8, 2, 5, 1};
  EXPECT_EQ(median_filter(two, 2, 7, 3), (std::vector<float>{5, 2, 5, 3, 8, 4, 9, 9, 4, 8, 3, 5, 2, 5}));
  const std::vector<float> short_rows = {3, 1, 2, 9, 7, 8};
  EXPECT_EQ(median_filter(short_rows, 2, 3, 7), short_rows);
}

// ---- punctuation ----

std::vector<WordTiming> timings(const std::vector<std::string>& words) {
  std::vector<WordTiming> out;
  int id = 0;
  for (const auto& w : words) out.push_back({w, {id++}, 0.0, 0.0, 1.0});
  return out;
}
std::vector<std::string> words_of(const std::vector<WordTiming>& a) {
  std::vector<std::string> out;
  for (const auto& w : a) out.push_back(w.word);
  return out;
}

TEST(WordTimingPunctuation, MergesLikeTheReference) {
  auto a = timings({" Hello", ",", " \"", "world", "\"", ".", " (", "yes", ")", "!", " \xC2\xBF", "Qu\xC3\xA9", "?"});
  merge_punctuations(a, kPrependPunctuations, kAppendPunctuations);
  EXPECT_EQ(words_of(a), (std::vector<std::string>{" Hello,", "", "", " \"world\".", "", "", "", " (yes)!", "", "", "",
                                                   " \xC2\xBFQu\xC3\xA9?", ""}));
  EXPECT_EQ(a[0].tokens, (std::vector<int>{0, 1}));
  EXPECT_EQ(a[3].tokens, (std::vector<int>{2, 3, 4, 5}));
  EXPECT_EQ(a[7].tokens, (std::vector<int>{6, 7, 8, 9}));
  EXPECT_TRUE(a[1].tokens.empty());
}

TEST(WordTimingPunctuation, SubstringSemantics) {
  // Python's `in` on strings: "\"'" is a substring of the appended set, "''" is not; a prepended mark needs
  // its leading space; a word ending in a space takes nothing.
  auto a = timings({" a", "\"'", " b", "''", " -", " c ", "."});
  merge_punctuations(a, kPrependPunctuations, kAppendPunctuations);
  EXPECT_EQ(words_of(a), (std::vector<std::string>{" a\"'", "", " b", "''", "", " - c ", "."}));
}

TEST(WordTimingPunctuation, CustomSetsAndEdges) {
  auto none = timings({});
  merge_punctuations(none, kPrependPunctuations, kAppendPunctuations);
  EXPECT_TRUE(none.empty());
  auto one = timings({" ("});
  merge_punctuations(one, kPrependPunctuations, kAppendPunctuations);
  EXPECT_EQ(words_of(one), (std::vector<std::string>{" ("}));
  auto c = timings({" x", ";", " y"});
  merge_punctuations(c, "", ";");
  EXPECT_EQ(words_of(c), (std::vector<std::string>{" x;", "", " y"}));
}

// ---- anomaly score ----

TEST(WordTimingAnomaly, ScoresAsTheReference) {
  EXPECT_DOUBLE_EQ(word_anomaly_score({0.0, 0.5, " ok", 0.9}), 0.0);
  EXPECT_DOUBLE_EQ(word_anomaly_score({0.0, 0.5, " unsure", 0.1}), 1.0);
  EXPECT_NEAR(word_anomaly_score({0.0, 0.033, " short", 0.9}), 1.5, 1e-12);
  EXPECT_NEAR(word_anomaly_score({0.0, 3.5, " long", 0.9}), 1.5, 1e-12);
  EXPECT_FALSE(is_segment_anomaly({}));
  const std::vector<Word> good = {{0.0, 0.4, " a", 0.9}, {0.4, 0.8, " b", 0.9}};
  EXPECT_FALSE(is_segment_anomaly(good));
  const std::vector<Word> bad = {{0.0, 0.0, " a", 0.1}, {0.0, 0.0, ".", 0.1}, {0.0, 0.5, " b", 0.9}};
  EXPECT_TRUE(is_segment_anomaly(bad));  // " a" scores 1 + 2 = 3; "." is punctuation and not counted
  const std::vector<Word> punct = {{0.0, 0.5, ",", 0.9}};
  EXPECT_TRUE(is_segment_anomaly(punct));  // no word left: 0 + 0.01 >= 0, as the reference
}

// ---- writers ----

Transcript writer_transcript(const json& doc) {
  Transcript t;
  t.language = "en";
  int id = 0;
  for (const auto& s : doc["transcript"]["segments"]) {
    Segment seg;
    seg.id = id++;
    seg.start = s["start"];
    seg.end = s["end"];
    seg.text = s["text"];
    for (const auto& w : s["words"]) seg.words.push_back({w["start"], w["end"], w["word"], w["probability"]});
    t.segments.push_back(std::move(seg));
  }
  return t;
}

TEST(WordTimingWriters, SubtitleOptionsMatchTheReference) {
  const json doc = read_json(test::fixtures_dir() + "/pipeline/word_writers.json");
  const Transcript t = writer_transcript(doc);
  ASSERT_GE(doc["cases"].size(), 8u);
  for (const auto& c : doc["cases"]) {
    WriterOptions o;
    o.highlight_words = c["options"].value("highlight_words", false);
    o.max_line_width = c["options"].value("max_line_width", 0);
    o.max_line_count = c["options"].value("max_line_count", 0);
    o.max_words_per_line = c["options"].value("max_words_per_line", 0);
    EXPECT_EQ(render(t, "srt", o), c["srt"].get<std::string>()) << c["options"].dump();
    EXPECT_EQ(render(t, "vtt", o), c["vtt"].get<std::string>()) << c["options"].dump();
  }
  // The two-argument render is the default options.
  EXPECT_EQ(render(t, "srt"), doc["cases"][0]["srt"].get<std::string>());
}

TEST(WordTimingWriters, WithoutWordsOptionsChangeNothing) {
  Transcript t = writer_transcript(read_json(test::fixtures_dir() + "/pipeline/word_writers.json"));
  for (auto& s : t.segments) s.words.clear();
  WriterOptions o;
  o.highlight_words = true;
  o.max_line_width = 10;
  o.max_line_count = 1;
  EXPECT_EQ(render(t, "srt", o), render(t, "srt"));
  EXPECT_EQ(render(t, "vtt", o), render(t, "vtt"));
  EXPECT_EQ(render(t, "srt").find("-->", 40) != std::string::npos, true);
  EXPECT_EQ(json::parse(render(t, "json"))["segments"][0].contains("words"), false);
}

TEST(WordTimingWriters, JsonListsWordsOfEverySegment) {
  const Transcript t = writer_transcript(read_json(test::fixtures_dir() + "/pipeline/word_writers.json"));
  const std::string text = render(t, "json");
  const json j = json::parse(text);
  ASSERT_EQ(j["segments"].size(), t.segments.size());
  const auto& s0 = j["segments"][0];
  EXPECT_EQ(s0.size(), 11u);
  EXPECT_EQ(s0["words"].size(), 7u);
  EXPECT_EQ(s0["words"][1]["word"], " so,");
  EXPECT_EQ(s0["words"][1]["start"], 0.32);
  EXPECT_EQ(s0["words"][1]["end"], 0.64);
  EXPECT_EQ(s0["words"][1]["probability"], 0.9);
  EXPECT_TRUE(j["segments"][2]["words"].is_array());  // the segment without words still has the list
  EXPECT_TRUE(j["segments"][2]["words"].empty());
  // Keys in the reference's order: the words list last, each word as {word, start, end, probability}.
  EXPECT_LT(text.find("\"no_speech_prob\""), text.find("\"words\""));
  EXPECT_NE(text.find("{\"word\":\" And\",\"start\":0.0,\"end\":0.32,\"probability\":0.9}"), std::string::npos);
}

// ---- word splitting (needs a vocabulary: the installed models') ----

struct Loaded {
  std::shared_ptr<const model::WhisperModel> net;
  std::unique_ptr<tokenizer::Tokenizer> tok;
};

Loaded load(const std::string& name) {
  Loaded l;
  l.net = model::WhisperModel::load(test::models_dir() + "/" + name + ".wisp");
  l.tok =
      std::make_unique<tokenizer::Tokenizer>(l.net->vocabulary(), tokenizer::find_special_tokens(l.net->vocabulary()));
  return l;
}

TEST(WordTimingSplit, SpacesAndUnicode) {
  const std::string path = test::models_dir() + "/base.wisp";
  WISP_REQUIRE_PATH(path);
  const Loaded m = load("base");
  const auto& tok = *m.tok;
  std::vector<int> ids = tok.encode(" Hello, wonderful world! It's 1999.");
  ids.push_back(tok.special().eot);
  const auto [words, word_tokens] = split_to_word_tokens(tok, ids, "en");
  std::vector<std::string> expected = {" Hello", ",", " wonderful", " world", "!", " It's", " 1999", ".", ""};
  EXPECT_EQ(words, expected);
  size_t total = 0;
  for (const auto& t : word_tokens) total += t.size();
  EXPECT_EQ(total, ids.size());
  EXPECT_EQ(word_tokens.back(), (std::vector<int>{tok.special().eot}));

  // Chinese: a word at every complete character, even when a character spans several tokens.
  std::vector<int> zh = tok.encode("\xE5\xBB\xA3\xE5\xB7\x9E\xE5\xB8\x82 \xE4\xBD\x9B");  // "廣州市 佛"
  zh.push_back(tok.special().eot);
  const auto [zw, zt] = split_to_word_tokens(tok, zh, "zh");
  // (the BPE gives the space its own token here, so it is a word of its own)
  EXPECT_EQ(zw, (std::vector<std::string>{"\xE5\xBB\xA3", "\xE5\xB7\x9E", "\xE5\xB8\x82", " ", "\xE4\xBD\x9B", ""}));
  EXPECT_EQ(sot_language(tok, std::vector<int>{tok.special().sot, *tok.language_token("zh"), tok.special().transcribe}),
            "zh");
  EXPECT_EQ(sot_language(tok, std::vector<int>{tok.special().sot}), "en");
}

// ---- end to end against faster-whisper ----

// Mel window as the seek loop cuts it: `size` content frames from `seek`, zeros after.
core::Tensor window(const std::vector<float>& mel, int n_mels, int n_frames, int seek, int size) {
  core::Tensor w = core::Tensor::zeros({n_mels, 3000}, core::DType::kF32);
  const int count = std::min(size, 3000);
  for (int m = 0; m < n_mels; ++m) {
    std::memcpy(w.data<float>() + static_cast<size_t>(m) * 3000, mel.data() + static_cast<size_t>(m) * n_frames + seek,
                static_cast<size_t>(count) * 4);
  }
  return w;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Median / max |ours - reference| over word starts and ends, and segment bounds; words must be identical.
void compare_with_reference(const std::string& name) {
  const std::string model_file = test::models_dir() + "/" + name + ".wisp";
  const std::string fixture = test::fixtures_dir() + "/model/ref_words_" + name + ".json";
  WISP_REQUIRE_PATH(model_file);
  WISP_REQUIRE_PATH(test::shared_data() + "/eval");
  ops::set_num_threads(2);
  const Loaded m = load(name);
  const json ref = read_json(fixture);
  LogMel mel(m.net->dims().n_mels);

  std::vector<double> diffs, segment_diffs, prob_diffs;
  size_t rows = 0, rows_same = 0, words_total = 0;
  for (const auto& file : ref["files"]) {
    const std::string path = test::shared_data() + "/eval/" + file["file"].get<std::string>();
    WISP_REQUIRE_PATH(path);
    const std::vector<float> samples = load_audio(path);
    const std::vector<float> mel_all = mel.compute(samples);
    const int n_frames = mel.n_frames(samples.size(), 160);
    std::vector<double> file_diffs;
    for (const auto& w : file["windows"]) {
      const int seek = w["seek"], num_frames = w["num_frames"];
      const auto sot = w["sot_sequence"].get<std::vector<int>>();
      const model::CrossKV cross =
          m.net->cross_kv(m.net->encode(window(mel_all, m.net->dims().n_mels, n_frames, seek, num_frames)));
      std::vector<WindowSegment> segs;
      std::vector<int> text_tokens;
      for (const auto& s : w["segments_in"]) {
        segs.push_back({s["tokens"].get<std::vector<int>>(), s["start"], s["end"], {}});
        for (int t : segs.back().tokens) {
          if (t < m.tok->special().eot) text_tokens.push_back(t);
        }
      }
      align_words(segs, *m.net, cross, *m.tok, sot, seek, num_frames, w["last_speech_timestamp"]);

      // Token level: the frame at which the DTW path enters each row.
      if (!w["align"].is_null() && !text_tokens.empty()) {
        const AlignmentMatrix a = alignment_matrix(*m.net, cross, *m.tok, sot, text_tokens, num_frames);
        const auto path = negative_dtw(a.matrix, a.rows, a.cols);
        std::vector<int> first;
        for (size_t k = 0; k < path.size(); ++k) {
          if (k == 0 || path[k].first != path[k - 1].first) first.push_back(path[k].second);
        }
        const auto ref_first = w["align"]["row_first_frame"].get<std::vector<int>>();
        ASSERT_EQ(first.size(), ref_first.size());
        for (size_t k = 0; k < first.size(); ++k) rows_same += first[k] == ref_first[k];
        rows += first.size();
        const auto ref_probs = w["align"]["text_token_probs"].get<std::vector<double>>();
        ASSERT_EQ(a.text_token_probs.size(), ref_probs.size());
        for (size_t k = 0; k < ref_probs.size(); ++k)
          prob_diffs.push_back(std::fabs(a.text_token_probs[k] - ref_probs[k]));
      }

      const auto& out = w["segments_out"];
      ASSERT_EQ(out.size(), segs.size());
      for (size_t i = 0; i < segs.size(); ++i) {
        const auto& rw = out[i]["words"];
        ASSERT_EQ(segs[i].words.size(), rw.size()) << file["file"] << " seek " << seek << " segment " << i;
        segment_diffs.push_back(std::fabs(segs[i].start - out[i]["start"].get<double>()));
        segment_diffs.push_back(std::fabs(segs[i].end - out[i]["end"].get<double>()));
        for (size_t k = 0; k < rw.size(); ++k) {
          const Word& ours = segs[i].words[k];
          EXPECT_EQ(ours.word, rw[k]["word"].get<std::string>()) << file["file"] << " seek " << seek;
          for (double d : {std::fabs(ours.start - rw[k]["start"].get<double>()),
                           std::fabs(ours.end - rw[k]["end"].get<double>())}) {
            diffs.push_back(d);
            file_diffs.push_back(d);
          }
          prob_diffs.push_back(std::fabs(ours.probability - rw[k]["probability"].get<double>()));
          ++words_total;
        }
      }
    }
    std::printf("[words %s] %-48s median |dt| %.3f s  max %.3f s  (%zu times)\n", name.c_str(),
                file["file"].get<std::string>().c_str(), median_of(file_diffs),
                file_diffs.empty() ? 0.0 : *std::max_element(file_diffs.begin(), file_diffs.end()), file_diffs.size());
  }
  ASSERT_FALSE(diffs.empty());
  const double med = median_of(diffs);
  const double mx = *std::max_element(diffs.begin(), diffs.end());
  const size_t exact = static_cast<size_t>(std::count(diffs.begin(), diffs.end(), 0.0));
  std::printf(
      "[words %s] %zu words: word times median |dt| %.3f s, max %.3f s, %.1f%% identical; segment bounds "
      "median %.3f s, max %.3f s; token rows entered at the reference frame %zu/%zu; probability max "
      "|dp| %.2g\n",
      name.c_str(), words_total, med, mx, 100.0 * exact / diffs.size(), median_of(segment_diffs),
      *std::max_element(segment_diffs.begin(), segment_diffs.end()), rows_same, rows,
      *std::max_element(prob_diffs.begin(), prob_diffs.end()));
  std::fflush(stdout);
  EXPECT_LE(med, 0.1);
  EXPECT_LE(*std::max_element(prob_diffs.begin(), prob_diffs.end()), 1e-3);
}

TEST(WordTimingModel, TinyEnMatchesFasterWhisper) { compare_with_reference("tiny.en"); }
TEST(WordTimingModel, BaseMatchesFasterWhisper) { compare_with_reference("base"); }

// ops::attention_scores gives the pre-softmax scores of one head: softmax(scores) · V_h is that head's slice
// of ops::attention's output.
TEST(WordTimingOps, AttentionScoresAreWhatTheAttentionNormalises) {
  const int64_t n_q = 5, n_kv = 37, n_head = 3, hd = 8, width = n_head * hd;
  core::Tensor q = core::Tensor::empty({n_q, width}, core::DType::kF32);
  core::Tensor kv = core::Tensor::empty({n_kv, 2 * width}, core::DType::kF32);
  for (int64_t i = 0; i < q.numel(); ++i) q.data<float>()[i] = std::sin(0.7f * static_cast<float>(i) + 0.3f);
  for (int64_t i = 0; i < kv.numel(); ++i) kv.data<float>()[i] = std::cos(0.13f * static_cast<float>(i * i % 97));
  const core::Tensor out = ops::attention({&q, 0, n_q}, {&kv, 0, n_kv}, {&kv, width, n_kv}, width, n_head, false, 0);
  for (int64_t h = 0; h < n_head; ++h) {
    const core::Tensor s = ops::attention_scores({&q, 0, n_q}, {&kv, 0, n_kv}, width, n_head, h);
    ASSERT_EQ(s.dim(0), n_q);
    ASSERT_EQ(s.dim(1), n_kv);
    for (int64_t i = 0; i < n_q; ++i) {
      const float* si = s.data<float>() + i * n_kv;
      double dot0 = 0.0;
      for (int64_t c = 0; c < hd; ++c) dot0 += q.data<float>()[i * width + h * hd + c] * kv.data<float>()[h * hd + c];
      EXPECT_NEAR(si[0], dot0 / std::sqrt(static_cast<double>(hd)), 1e-5);
      const double mx = *std::max_element(si, si + n_kv);
      std::vector<double> p(static_cast<size_t>(n_kv));
      double sum = 0.0;
      for (int64_t j = 0; j < n_kv; ++j) sum += (p[j] = std::exp(si[j] - mx));
      for (int64_t c = 0; c < hd; ++c) {
        double o = 0.0;
        for (int64_t j = 0; j < n_kv; ++j) o += p[j] / sum * kv.data<float>()[j * 2 * width + width + h * hd + c];
        EXPECT_NEAR(out.data<float>()[i * width + h * hd + c], o, 1e-5);
      }
    }
  }
  EXPECT_THROW(ops::attention_scores({&q, 0, n_q}, {&kv, 0, n_kv}, width, n_head, n_head), InternalError);
}

TEST(WordTimingModel, CrossAttentionPassIsTheDecodePass) {
  const std::string path = test::models_dir() + "/tiny.en.wisp";
  WISP_REQUIRE_PATH(path);
  const Loaded m = load("tiny.en");
  const auto& d = m.net->dims();
  // Random-ish audio features: only the consistency of the two passes matters here.
  core::Tensor feats = core::Tensor::empty({d.n_audio_ctx, d.n_audio_state}, core::DType::kF32);
  for (int64_t i = 0; i < feats.numel(); ++i) feats.data<float>()[i] = std::sin(0.37f * static_cast<float>(i));
  const model::CrossKV cross = m.net->cross_kv(feats);
  const std::vector<int> tokens = {m.tok->special().sot, m.tok->special().no_timestamps, 400, 1002, 13,
                                   m.tok->special().eot};
  const auto& heads = m.net->metadata().alignment_heads;
  ASSERT_FALSE(heads.empty());
  const model::CrossAttention a = m.net->cross_attention_weights(tokens, cross, heads);
  ASSERT_EQ(a.scores.size(), heads.size());
  for (const auto& s : a.scores) {
    EXPECT_EQ(s.dim(0), static_cast<int64_t>(tokens.size()));
    EXPECT_EQ(s.dim(1), d.n_audio_ctx);
  }
  // The hidden states are decode()'s, token by token or all at once.
  model::KVCache cache = m.net->new_cache();
  const core::Tensor h = m.net->decode(tokens, cross, cache);
  ASSERT_EQ(h.numel(), a.hidden.numel());
  EXPECT_EQ(std::memcmp(h.data<float>(), a.hidden.data<float>(), static_cast<size_t>(h.numel()) * 4), 0);
  EXPECT_THROW(m.net->cross_attention_weights(tokens, cross, std::vector<std::pair<int, int>>{{d.n_text_layer, 0}}),
               InvalidArgument);
}

}  // namespace
}  // namespace wisp::pipeline
