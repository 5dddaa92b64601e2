// The wisp command-line tool: transcribe, convert, eval. Uses the public API only.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/gpu_whisper.h"  // wisp bench (GPU runner; a stub in CPU-only builds)
#include "wisp/audio.h"
#include "wisp/calibrate.h"
#include "wisp/convert.h"
#include "wisp/model.h"
#include "wisp/output.h"
#include "wisp/scoring.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Where installed models live: $WISP_MODELS_DIR, else models/ beside the build folder of this binary,
// else the source tree's models/.
std::vector<fs::path> model_dirs() {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("WISP_MODELS_DIR"); env && *env) dirs.emplace_back(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    dirs.push_back(exe.parent_path().parent_path() / "models");
    dirs.push_back(exe.parent_path().parent_path() / "share" / "wisp" / "models");
  }
  dirs.emplace_back(WISP_SOURCE_MODELS_DIR);
  return dirs;
}

// -m accepts a path to an engine file or the name of an installed model ("base", "tiny.en").
std::string resolve_model(const std::string& arg) {
  if (!arg.empty() && fs::exists(arg)) return arg;
  const char* env = std::getenv("WISP_MODEL");
  const std::string name = arg.empty() ? (env && *env ? env : "base") : arg;
  if (fs::exists(name)) return name;
  for (const auto& d : model_dirs()) {
    for (const auto& candidate : {d / (name + ".wisp"), d / name}) {
      if (fs::is_regular_file(candidate)) return candidate.string();
    }
  }
  throw wisp::IoError("model '" + name + "' not found (give a .wisp file, or run ./setup.sh to install models)");
}

std::string format_time(double t) {
  const long ms = std::lround(t * 1000.0);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02ld:%02ld.%03ld", ms / 60000, (ms / 1000) % 60, ms % 1000);
  return buf;
}

std::vector<std::string> parse_formats(const std::string& spec) {
  std::vector<std::string> formats;
  std::stringstream ss(spec);
  std::string f;
  while (std::getline(ss, f, ',')) {
    if (f.empty()) continue;
    if (f == "all") return wisp::output_formats();
    bool known = false;
    for (const auto& k : wisp::output_formats()) known |= (k == f);
    if (!known) throw wisp::InvalidArgument("unknown output format '" + f + "' (txt, srt, vtt, json, tsv or all)");
    formats.push_back(f);
  }
  return formats;
}

// Decoding options shared by transcribe and eval; the defaults are the reference CLI's.
struct DecodeArgs {
  int beam_size = 5;
  int best_of = 5;
  double patience = 1.0;
  double length_penalty = 1.0;
  std::string temperature;  // "" = 0 with the fallback increment; a value (or a comma list) as given
  std::string temperature_increment = "0.2";
  std::string compression_ratio_threshold = "2.4";
  std::string logprob_threshold = "-1.0";
  std::string no_speech_threshold = "0.6";
  uint64_t seed = 0;
  bool condition_on_previous_text = true;
  double prompt_reset_on_temperature = 0.5;
  std::string initial_prompt;
  bool carry_initial_prompt = false;
  std::string prefix;
  std::string suppress_tokens = "-1";
  bool suppress_blank = true;
  double max_initial_timestamp = 1.0;
  std::string clip_timestamps = "0";
  bool word_timestamps = false;
  std::string prepend_punctuations = wisp::TranscribeOptions{}.prepend_punctuations;
  std::string append_punctuations = wisp::TranscribeOptions{}.append_punctuations;
  std::string hallucination_silence_threshold = "none";
};

double parse_number(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  throw wisp::InvalidArgument(flag + ": '" + text + "' is not a number");
}

std::optional<double> parse_optional(const std::string& flag, const std::string& text) {
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "none" || lower == "off") return std::nullopt;
  return parse_number(flag, text);
}

std::vector<double> parse_numbers(const std::string& flag, const std::string& text) {
  std::vector<double> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto b = item.find_first_not_of(' '), e = item.find_last_not_of(' ');
    if (b == std::string::npos) continue;
    out.push_back(parse_number(flag, item.substr(b, e - b + 1)));
  }
  return out;
}

// --temperature T alone decodes at T only; without it, 0 and steps of --temperature-increment-on-fallback
// up to 1.0 (the reference CLI's 0, 0.2, ..., 1.0); both given: T, T + increment, ... <= 1.0, as the
// reference CLI. A comma list in --temperature is used as it is.
std::vector<double> temperatures(const DecodeArgs& a, bool increment_given) {
  if (a.temperature.find(',') != std::string::npos) return parse_numbers("--temperature", a.temperature);
  const double start = a.temperature.empty() ? 0.0 : parse_number("--temperature", a.temperature);
  const auto inc = parse_optional("--temperature-increment-on-fallback", a.temperature_increment);
  if ((!a.temperature.empty() && !increment_given) || !inc) return {start};
  if (!(*inc > 0)) throw wisp::InvalidArgument("--temperature-increment-on-fallback must be > 0 (or none)");
  std::vector<double> ts;
  for (int i = 0;; ++i) {  // numpy.arange(start, 1.0 + 1e-6, inc)
    const double t = start + i * *inc;
    if (t >= 1.0 + 1e-6) break;
    ts.push_back(std::round(t * 1e12) / 1e12);  // 0.6, not arange's 0.6000000000000001
  }
  if (ts.empty()) ts.push_back(start);
  return ts;
}

wisp::TranscribeOptions decode_options(const DecodeArgs& a, bool increment_given) {
  wisp::TranscribeOptions o;
  o.beam_size = a.beam_size;
  o.best_of = a.best_of;
  o.patience = a.patience;
  o.length_penalty = a.length_penalty;
  o.temperatures = temperatures(a, increment_given);
  o.compression_ratio_threshold = parse_optional("--compression-ratio-threshold", a.compression_ratio_threshold);
  o.logprob_threshold = parse_optional("--logprob-threshold", a.logprob_threshold);
  o.no_speech_threshold = parse_optional("--no-speech-threshold", a.no_speech_threshold);
  o.seed = a.seed;
  o.condition_on_previous_text = a.condition_on_previous_text;
  o.prompt_reset_on_temperature = a.prompt_reset_on_temperature;
  o.initial_prompt = a.initial_prompt;
  o.carry_initial_prompt = a.carry_initial_prompt;
  o.prefix = a.prefix;
  o.suppress_tokens.clear();
  for (double id : parse_numbers("--suppress-tokens", a.suppress_tokens)) {
    if (id != std::floor(id)) throw wisp::InvalidArgument("--suppress-tokens: token ids are integers");
    o.suppress_tokens.push_back(static_cast<int>(id));
  }
  o.suppress_blank = a.suppress_blank;
  o.max_initial_timestamp = a.max_initial_timestamp;
  o.clip_timestamps = parse_numbers("--clip-timestamps", a.clip_timestamps);
  if (o.clip_timestamps == std::vector<double>{0.0}) o.clip_timestamps.clear();
  o.word_timestamps = a.word_timestamps;
  o.prepend_punctuations = a.prepend_punctuations;
  o.append_punctuations = a.append_punctuations;
  o.hallucination_silence_threshold =
      parse_optional("--hallucination-silence-threshold", a.hallucination_silence_threshold);
  return o;
}

// transcribe's and eval's --encoder-gelu.
constexpr const char* kEncoderGeluHelp =
    "the encoder's GELU: erf (Whisper's), tanh (the approximation, fused into the GPU's GEMMs: a faster encoder; "
    "GPU only) or auto (tanh on the GPU, erf on the CPU)";

// Returns the --temperature-increment-on-fallback option (to ask whether it was given).
CLI::Option* add_decode_options(CLI::App* app, DecodeArgs& a) {
  const std::string g = "Decoding";
  app->add_option("--beam-size,--beam_size", a.beam_size, "beams at temperature 0 (1 = greedy)")
      ->check(CLI::Range(1, 64))
      ->group(g);
  app->add_option("--best-of,--best_of", a.best_of, "candidates sampled at temperatures above 0")
      ->check(CLI::Range(1, 64))
      ->group(g);
  app->add_option("--patience", a.patience, "beam search patience (finished beams = beam size × patience)")->group(g);
  app->add_option("--length-penalty,--length_penalty", a.length_penalty, "rank results by sum_logprob / length^penalty")
      ->group(g);
  app->add_option("--temperature", a.temperature,
                  "decode at this temperature only (default: 0 with the fallback below); a comma list is "
                  "used as given")
      ->group(g);
  auto* inc = app->add_option("--temperature-increment-on-fallback,--temperature_increment_on_fallback",
                              a.temperature_increment,
                              "fallback temperatures from --temperature up to 1.0 in these steps (none: no "
                              "fallback)")
                  ->group(g);
  app->add_option("--compression-ratio-threshold,--compression_ratio_threshold", a.compression_ratio_threshold,
                  "fall back when the text's gzip ratio is above this (none: never)")
      ->group(g);
  app->add_option("--logprob-threshold,--logprob_threshold", a.logprob_threshold,
                  "fall back when the average log-probability is below this (none: never)")
      ->group(g);
  app->add_option("--no-speech-threshold,--no_speech_threshold", a.no_speech_threshold,
                  "skip a window whose P(no speech) is above this and log-probability low (none: never)")
      ->group(g);
  app->add_option("--seed", a.seed, "sampling seed (temperatures above 0)")->group(g);
  app->add_option("--condition-on-previous-text,--condition_on_previous_text", a.condition_on_previous_text,
                  "use the previous window's text as the prompt (true/false)")
      ->group(g);
  app->add_option("--prompt-reset-on-temperature,--prompt_reset_on_temperature", a.prompt_reset_on_temperature,
                  "drop the previous text after a window decoded above this temperature")
      ->group(g);
  app->add_option("--initial-prompt,--initial_prompt", a.initial_prompt, "text to condition the first window on")
      ->group(g);
  app->add_flag("--carry-initial-prompt,--carry_initial_prompt", a.carry_initial_prompt,
                "keep the initial prompt in every window's prompt")
      ->group(g);
  app->add_option("--prefix", a.prefix, "text the transcript of the first window starts with")->group(g);
  app->add_option("--suppress-tokens,--suppress_tokens", a.suppress_tokens,
                  "token ids never sampled, comma-separated; -1: the model's non-speech symbols")
      ->group(g);
  app->add_option("--suppress-blank,--suppress_blank", a.suppress_blank,
                  "no blank or end of text as a window's first token (true/false)")
      ->group(g);
  app->add_option("--max-initial-timestamp,--max_initial_timestamp", a.max_initial_timestamp,
                  "latest first timestamp of a window (seconds)")
      ->group(g);
  app->add_option("--clip-timestamps,--clip_timestamps", a.clip_timestamps,
                  "only these clips: start,end,start,end,... seconds (the last end defaults to the end)")
      ->group(g);
  app->add_flag("--word-timestamps,--word_timestamps", a.word_timestamps,
                "word-level timestamps from the cross-attention")
      ->group(g);
  app->add_option("--prepend-punctuations,--prepend_punctuations", a.prepend_punctuations,
                  "with word timestamps: punctuation merged into the next word")
      ->group(g);
  app->add_option("--append-punctuations,--append_punctuations", a.append_punctuations,
                  "with word timestamps: punctuation merged into the previous word")
      ->group(g);
  app->add_option("--hallucination-silence-threshold,--hallucination_silence_threshold",
                  a.hallucination_silence_threshold,
                  "with word timestamps: skip silences longer than this (s) around a likely hallucination")
      ->group(g);
  return inc;
}

struct TranscribeArgs {
  std::vector<std::string> files;
  std::string model;
  std::string language = "auto";
  std::string task = "transcribe";
  std::string output_format;
  std::string output_dir = ".";
  int threads = 0;
  std::string device = "auto";
  std::string kv_cache = "fp16";
  std::string encoder_gelu = "auto";
  int batch = 0;  // files at once; 0: up to 4 on a GPU, 1 on the CPU
  bool print_timestamps = false;
  bool no_timestamps = false;
  DecodeArgs decode;
  bool increment_given = false;
  wisp::WriterOptions writer;
};

// Decodes audio files (FFmpeg, a thread per file) up to `ahead` files past the one asked for, so that the
// transcriptions do not wait for the decoder in between. A decoding error surfaces from get().
class AudioPrefetch {
 public:
  AudioPrefetch(std::vector<std::string> files, size_t ahead) : files_(std::move(files)), ahead_(ahead) {
    audio_.resize(files_.size());
  }
  std::vector<float> get(size_t i) {
    std::future<std::vector<float>> mine;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t j = i; j < std::min(files_.size(), i + ahead_ + 1); ++j) {
        if (!audio_[j].valid()) {
          audio_[j] = std::async(std::launch::async, [path = files_[j]] { return wisp::load_audio(path); });
        }
      }
      mine = std::move(audio_[i]);
    }
    return mine.get();
  }

 private:
  const std::vector<std::string> files_;
  const size_t ahead_;
  std::mutex mu_;
  std::vector<std::future<std::vector<float>>> audio_;
};

// Runs work(i) for every i < count on `workers` threads and hands each result to emit(i, result) on the
// calling thread, in the order of i, as soon as it and the ones before it are done.
template <class Result>
void run_in_order(size_t count, size_t workers, const std::function<Result(size_t)>& work,
                  const std::function<void(size_t, Result&)>& emit) {
  std::vector<std::optional<Result>> results(count);
  std::mutex mu;
  std::condition_variable cv;
  size_t next = 0;
  const auto worker = [&] {
    for (;;) {
      size_t i = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (next >= count) return;
        i = next++;
      }
      Result r = work(i);
      {
        std::lock_guard<std::mutex> lock(mu);
        results[i] = std::move(r);
      }
      cv.notify_all();
    }
  };
  std::vector<std::thread> threads;
  for (size_t w = 0; w < std::max<size_t>(1, std::min(workers, count)); ++w) threads.emplace_back(worker);
  for (size_t i = 0; i < count; ++i) {
    Result r;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return results[i].has_value(); });
      r = std::move(*results[i]);
      results[i].reset();
    }
    emit(i, r);
  }
  for (auto& t : threads) t.join();
}

int run_transcribe(const TranscribeArgs& a) {
  const std::vector<std::string> formats = parse_formats(a.output_format);
  if (!formats.empty()) {
    std::error_code ec;
    fs::create_directories(a.output_dir, ec);
    if (!fs::is_directory(a.output_dir)) throw wisp::IoError("cannot create output directory '" + a.output_dir + "'");
  }
  wisp::TranscribeOptions base = decode_options(a.decode, a.increment_given);
  base.language = a.language;
  base.task = a.task;
  base.timestamps = !a.no_timestamps;
  const size_t count = a.files.size();
  wisp::LoadOptions load{a.threads, a.device, a.kv_cache, false};
  load.encoder_gelu = a.encoder_gelu;
  load.concurrency = a.batch > 0 ? a.batch : static_cast<int>(std::clamp<size_t>(count, 1, 4));
  const auto model = wisp::Model::load(resolve_model(a.model), load);
  // Files transcribed at once. On a GPU their decode steps run as one batched step; on the CPU they would only
  // share the cores, so one at a time there unless --batch asks otherwise.
  const bool cpu = model->info().device == "cpu";
  // (On a GPU whose free memory holds fewer transcriptions' state, the model keeps fewer: info().concurrency.)
  const int at_once = model->info().concurrency;
  const size_t workers = std::min<size_t>(count, static_cast<size_t>(cpu && a.batch == 0 ? 1 : at_once));
  // Fewer files than --batch: long ones are cut into parts transcribed at once (TranscribeOptions::parts).
  if (a.batch > 0 && base.clip_timestamps.empty()) base.parts = std::max(1, at_once / static_cast<int>(workers));
  const bool tty = ::isatty(STDERR_FILENO);

  struct Outcome {
    std::optional<wisp::Transcript> transcript;
    std::string error;
  };
  AudioPrefetch audio(a.files, workers);
  int failures = 0;
  run_in_order<Outcome>(
      count, workers,
      [&](size_t i) {
        Outcome out;
        try {
          const std::vector<float> samples = audio.get(i);
          wisp::TranscribeOptions o = base;
          const double duration = static_cast<double>(samples.size()) / wisp::kSampleRate;
          if (duration > 30.0 && workers == 1) {
            o.on_progress = [&, file = a.files[i]](double done, double total) {
              std::fprintf(stderr, "%s[wisp] %s: %3.0f%% (%.1f / %.1f s)%s", tty ? "\r" : "", file.c_str(),
                           100.0 * done / total, done, total, tty ? "" : "\n");
              if (tty && done >= total) std::fprintf(stderr, "\n");
              std::fflush(stderr);
            };
          }
          out.transcript = model->transcribe(samples, o);
        } catch (const std::exception& e) {
          out.error = e.what();
        }
        return out;
      },
      [&](size_t i, Outcome& out) {
        if (!out.transcript) {
          std::fprintf(stderr, "wisp: error: %s\n", out.error.c_str());
          ++failures;
          return;
        }
        try {
          const wisp::Transcript& t = *out.transcript;
          for (const auto& s : t.segments) {
            std::string text = s.text;
            const auto b = text.find_first_not_of(' ');
            text = b == std::string::npos ? "" : text.substr(b);
            if (a.print_timestamps) {
              std::cout << "[" << format_time(s.start) << " --> " << format_time(s.end) << "]  " << text << "\n";
            } else {
              std::cout << text << "\n";
            }
          }
          std::cout.flush();
          const std::string stem = fs::path(a.files[i]).stem().string();
          for (const auto& f : formats) {
            wisp::write_file_atomic((fs::path(a.output_dir) / (stem + "." + f)).string(), wisp::render(t, f, a.writer));
          }
        } catch (const wisp::Error& e) {
          std::fprintf(stderr, "wisp: error: %s\n", e.what());
          ++failures;
        }
      });
  return failures ? 1 : 0;
}

struct EvalArgs {
  std::string manifest;
  std::string model;
  int threads = 0;
  std::string device = "auto";
  std::string kv_cache = "fp16";
  std::string encoder_gelu = "auto";
  bool round_kv_on_cpu = false;
  int limit = 0;
  int batch = 0;  // files at once (0: one)
  bool json_out = false;
  bool language_from_manifest = false;
  std::string save;
  std::string hyp_json;
  DecodeArgs decode;
  bool increment_given = false;
};

struct Row {
  std::string file, language, reference;
};

std::vector<Row> read_manifest(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw wisp::IoError("cannot open manifest '" + path + "'");
  std::string line;
  if (!std::getline(in, line)) throw wisp::InvalidArgument("manifest '" + path + "' is empty");
  std::vector<std::string> header;
  {
    std::stringstream ss(line);
    std::string col;
    while (std::getline(ss, col, '\t')) header.push_back(col);
  }
  auto col_of = [&](const std::string& name) {
    for (size_t i = 0; i < header.size(); ++i) {
      if (header[i] == name) return static_cast<int>(i);
    }
    throw wisp::InvalidArgument("manifest '" + path + "' has no column '" + name + "'");
  };
  const int cf = col_of("file"), cl = col_of("language"), cr = col_of("reference_text");
  std::vector<Row> rows;
  const fs::path base = fs::path(path).parent_path();
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::vector<std::string> cols;
    std::stringstream ss(line);
    std::string col;
    while (std::getline(ss, col, '\t')) cols.push_back(col);
    cols.resize(header.size());
    rows.push_back({(base / cols[static_cast<size_t>(cf)]).string(), cols[static_cast<size_t>(cl)],
                    cols[static_cast<size_t>(cr)]});
  }
  return rows;
}

int run_eval(const EvalArgs& a) {
  std::vector<Row> rows = read_manifest(a.manifest);
  if (a.limit > 0 && static_cast<int>(rows.size()) > a.limit) rows.resize(static_cast<size_t>(a.limit));
  const wisp::Scorer scorer;
  // Hypotheses come from wisp, or from another system's transcripts (same scoring for both).
  std::map<std::string, std::string> external;
  if (!a.hyp_json.empty()) {
    std::ifstream in(a.hyp_json);
    if (!in) throw wisp::IoError("cannot open '" + a.hyp_json + "'");
    const json j = json::parse(in);
    const fs::path base = fs::path(a.manifest).parent_path();
    for (const auto& item : j.at("files")) {
      fs::path f = item.at("file").get<std::string>();
      if (f.is_relative()) f = base / f;  // paths relative to the manifest, as in the manifest itself
      external[f.lexically_normal().string()] = item.value("text", "");
    }
  }
  const wisp::TranscribeOptions base = decode_options(a.decode, a.increment_given);
  std::unique_ptr<wisp::Model> model;
  if (a.hyp_json.empty()) {
    wisp::LoadOptions load{a.threads, a.device, a.kv_cache, a.round_kv_on_cpu};
    load.encoder_gelu = a.encoder_gelu;
    load.concurrency = std::max(1, a.batch);
    model = wisp::Model::load(resolve_model(a.model), load);
  }

  struct Agg {
    long errors = 0, units = 0;
    int files = 0;
    double audio_s = 0, wall_s = 0;
  };
  std::map<std::string, Agg> per_lang;
  Agg words, chars, total;
  json items = json::array();
  // Files transcribed at once (--batch; on a GPU their decode steps run batched). Each file's wall time then
  // overlaps the others'; the whole run's is `elapsed_s`.
  struct Item {
    json item;
    std::string hyp;
    double audio_s = 0, wall_s = 0;
  };
  std::vector<std::string> files;
  for (const Row& r : rows) files.push_back(r.file);
  const size_t workers = static_cast<size_t>(model ? model->info().concurrency : 1);
  AudioPrefetch audio(model ? files : std::vector<std::string>(), workers);
  const auto started = std::chrono::steady_clock::now();
  run_in_order<Item>(
      rows.size(), model ? workers : 1,
      [&](size_t i) {
        const Row& r = rows[i];
        Item it;
        it.item = {{"file", r.file}, {"language", r.language}};
        try {
          if (model) {
            // Wall time covers decoding the audio file and transcribing it, as a user waits for both.
            const auto t0 = std::chrono::steady_clock::now();
            const std::vector<float> samples = audio.get(i);
            it.audio_s = static_cast<double>(samples.size()) / wisp::kSampleRate;
            wisp::TranscribeOptions o = base;
            if (a.language_from_manifest && model->info().multilingual && r.language != "none") {
              o.language = r.language;
            }
            const wisp::Transcript t = model->transcribe(samples, o);
            it.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            it.hyp = t.text();
            it.item["detected_language"] = t.language;
            json toks = json::array();
            for (const auto& s : t.segments) toks.push_back(s.tokens);
            it.item["tokens"] = toks;
          } else {
            it.audio_s = static_cast<double>(wisp::load_audio(r.file).size()) / wisp::kSampleRate;
            const auto key = fs::path(r.file).lexically_normal().string();
            const auto found = external.find(key);
            if (found == external.end()) throw wisp::InvalidArgument("no hypothesis for " + r.file);
            it.hyp = found->second;
          }
        } catch (const std::exception& e) {
          std::fprintf(stderr, "wisp: error: %s\n", e.what());
          it.item["error"] = e.what();
        }
        return it;
      },
      [&](size_t i, Item& it) {
        const Row& r = rows[i];
        json& item = it.item;
        item["hypothesis"] = it.hyp;
        // Rows without a reference (no-speech controls) are transcribed and listed, but not scored.
        if (r.reference.empty()) {
          items.push_back(item);
          return;
        }
        const wisp::Score s = scorer.score(r.language, r.reference, it.hyp);
        item["errors"] = s.errors;
        item["units"] = s.units;
        item["wall_s"] = it.wall_s;
        item["audio_s"] = it.audio_s;
        items.push_back(item);
        for (Agg* g : {&per_lang[r.language], s.by_char ? &chars : &words, &total}) {
          g->errors += s.errors;
          g->units += s.units;
          g->files += 1;
          g->audio_s += it.audio_s;
          g->wall_s += it.wall_s;
        }
        if (!a.json_out) {
          std::fprintf(stderr, "%-60s %s %3ld/%-3ld %.2fs\n", fs::path(r.file).filename().c_str(), r.language.c_str(),
                       s.errors, s.units, it.wall_s);
        }
      });
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  auto rate = [](const Agg& g) { return g.units ? static_cast<double>(g.errors) / static_cast<double>(g.units) : 0.0; };
  json langs = json::object();
  for (const auto& [lang, g] : per_lang) {
    langs[lang] = {{"files", g.files},     {wisp::Scorer::scored_by_char(lang) ? "cer" : "wer", rate(g)},
                   {"errors", g.errors},   {"units", g.units},
                   {"audio_s", g.audio_s}, {"wall_s", g.wall_s}};
  }
  json out = {{"manifest", a.manifest},
              {"decoding",
               {{"beam_size", base.beam_size},
                {"best_of", base.best_of},
                {"temperatures", base.temperatures},
                {"seed", base.seed}}},
              {"model", model ? model->info().path : a.hyp_json},
              {"device", model ? model->info().device : "none"},
              {"files", total.files},
              {"wer", rate(words)},
              {"cer", rate(chars)},
              {"audio_s", total.audio_s},
              {"wall_s", total.wall_s},
              {"elapsed_s", elapsed},
              {"batch", workers},
              {"rtf", total.audio_s > 0 ? (workers > 1 ? elapsed : total.wall_s) / total.audio_s : 0.0},
              {"languages", langs}};
  if (!a.save.empty()) {
    json full = out;
    full["items"] = items;
    wisp::write_file_atomic(a.save, full.dump(1));
  }
  if (a.json_out) {
    std::cout << out.dump() << "\n";
  } else {
    std::printf("%-8s %6s %8s %8s %9s %9s\n", "language", "files", "WER/CER", "errors", "audio_s", "wall_s");
    for (const auto& [lang, g] : per_lang) {
      std::printf("%-8s %6d %8.4f %8ld %9.1f %9.1f\n", lang.c_str(), g.files, rate(g), g.errors, g.audio_s, g.wall_s);
    }
    std::printf("overall: WER %.4f  CER %.4f  files %d  audio %.1f s  wall %.1f s  RTF %.3f  (%s)\n", rate(words),
                rate(chars), total.files, total.audio_s, workers > 1 ? elapsed : total.wall_s, out["rtf"].get<double>(),
                model ? model->info().device.c_str() : "external transcripts");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"wisp — fast Whisper speech recognition"};
  app.set_version_flag("--version", std::string("wisp ") + WISP_VERSION);
  app.require_subcommand(1);

  TranscribeArgs ta;
  auto* tr = app.add_subcommand("transcribe", "Transcribe audio files (any format FFmpeg reads)");
  tr->add_option("files", ta.files, "audio files")->required();
  tr->add_option("-m,--model", ta.model, "engine file or installed model name (default: base)");
  tr->add_option("-l,--language", ta.language, "language code, or auto to detect it");
  tr->add_option("--task", ta.task, "transcribe, or translate to English")
      ->check(CLI::IsMember({"transcribe", "translate"}));
  tr->add_option("-f,--output-format,--output_format", ta.output_format, "txt,srt,vtt,json,tsv or all");
  tr->add_option("-o,--output-dir,--output_dir", ta.output_dir, "directory for output files");
  tr->add_option("-t,--threads", ta.threads, "CPU threads (default: all cores)")->check(CLI::Range(0, 4096));
  tr->add_option("--device", ta.device, "auto (the GPU when there is one), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  tr->add_option("--kv-cache", ta.kv_cache, "GPU K/V cache storage: fp16, int8 (calibrated), int8-dynamic, fp8")
      ->check(CLI::IsMember({"fp16", "int8", "int8-dynamic", "fp8"}));
  tr->add_option("--encoder-gelu", ta.encoder_gelu, kEncoderGeluHelp)->check(CLI::IsMember({"auto", "erf", "tanh"}));
  tr->add_option("--batch", ta.batch,
                 "files transcribed at once; on a GPU their decode steps run batched (default: up to 4 on a GPU, "
                 "1 on the CPU). With fewer files, long ones are cut into parts of at least 60 s at quiet points "
                 "and the parts are transcribed at once (the text may then differ from one pass near the cuts)")
      ->check(CLI::Range(1, 64));
  CLI::Option* tr_inc = add_decode_options(tr, ta.decode);
  tr->add_flag("--no-timestamps", ta.no_timestamps, "decode without timestamp tokens");
  tr->add_flag("--print-timestamps", ta.print_timestamps, "print [start --> end] before each segment");
  tr->add_flag("--highlight-words,--highlight_words", ta.writer.highlight_words,
               "srt/vtt: a cue per word, the word underlined (needs --word-timestamps)");
  tr->add_option("--max-line-width,--max_line_width", ta.writer.max_line_width,
                 "srt/vtt: characters per line before a break (needs --word-timestamps)")
      ->check(CLI::Range(0, 100000));
  tr->add_option("--max-line-count,--max_line_count", ta.writer.max_line_count,
                 "srt/vtt: lines per cue (needs --word-timestamps)")
      ->check(CLI::Range(0, 100000));
  tr->add_option("--max-words-per-line,--max_words_per_line", ta.writer.max_words_per_line,
                 "srt/vtt: words per cue (needs --word-timestamps)")
      ->check(CLI::Range(0, 100000));

  std::string conv_src, conv_dst, conv_weights = "keep", conv_name;
  int conv_group = 0;
  bool conv_act_scaling = false, conv_gptq = false;
  std::vector<std::string> conv_keep_float;
  auto* cv = app.add_subcommand(
      "convert", "Convert a CTranslate2 or Hugging Face model directory, or quantise a .wisp file, to a .wisp file");
  cv->add_option("source", conv_src,
                 "CTranslate2 dir (model.bin), Hugging Face dir (model.safetensors) or f16/f32 .wisp file")
      ->required();
  cv->add_option("output", conv_dst, "engine file to write")->required();
  cv->add_option("--weights", conv_weights,
                 "keep (the source's), fp16, fp32, or int8/int4 (weight-only quantised block matrices)")
      ->check(CLI::IsMember({"keep", "f16", "fp16", "f32", "fp32", "int8", "int4"}));
  cv->add_option("--group-size", conv_group, "int4: inputs per scale, 64 (default) or 128");
  cv->add_option("--name", conv_name, "model name stored in the file");
  cv->add_option("--keep-float", conv_keep_float,
                 "int8/int4: block matrices whose name matches one of these patterns (e.g. 'decoder.blocks.*.mlp.*') "
                 "keep their float type (see docs/quantization.md)");
  cv->add_flag("--activation-scaling", conv_act_scaling,
               "int8/int4 from a calibrated .wisp (`wisp calibrate`): scale the layers after the block norms by "
               "their measured inputs before rounding (helps int4 --group-size 128; see docs/quantization.md)");
  cv->add_flag("--gptq", conv_gptq,
               "int8/int4 from a .wisp calibrated with --input-gram: choose the codes by GPTQ instead of plain "
               "rounding (see docs/quantization.md)");

  std::vector<std::string> cal_files;
  std::string cal_model, cal_out;
  auto* ca = app.add_subcommand(
      "calibrate",
      "Measure a model on audio files: K/V ranges (for --kv-cache int8/fp8 on the GPU) and the inputs of the "
      "layers after the block norms (for `convert --weights int8|int4`)");
  ca->add_option("files", cal_files, "audio files to transcribe (a few minutes of typical speech)")->required();
  ca->add_option("-m,--model", cal_model, "engine file or installed model name (default: base)");
  ca->add_option("-o,--output", cal_out, "engine file to write (default: the model file itself)");
  bool cal_grams = false;
  ca->add_flag("--input-gram", cal_grams,
               "also store every linear layer's input Gram matrix, for `convert --gptq` (large: tiny.en +97 MB)");

  EvalArgs ea;
  auto* ev = app.add_subcommand("eval", "WER/CER and speed over a manifest of audio files with references");
  ev->add_option("manifest", ea.manifest, "TSV with file, language, reference_text columns")->required();
  ev->add_option("-m,--model", ea.model, "engine file or installed model name (default: base)");
  ev->add_option("-t,--threads", ea.threads, "CPU threads (default: all cores)");
  ev->add_option("--device", ea.device, "auto (the GPU when there is one), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  ev->add_option("--kv-cache", ea.kv_cache, "GPU K/V cache storage: fp16, int8 (calibrated), int8-dynamic, fp8")
      ->check(CLI::IsMember({"fp16", "int8", "int8-dynamic", "fp8"}));
  ev->add_option("--encoder-gelu", ea.encoder_gelu, kEncoderGeluHelp)->check(CLI::IsMember({"auto", "erf", "tanh"}));
  ev->add_flag("--round-kv-on-cpu", ea.round_kv_on_cpu,
               "with --device cpu: round the K/V rows as --kv-cache would store them on the GPU (accuracy studies)");
  ev->add_option("--limit", ea.limit, "only the first N rows");
  ev->add_option("--batch", ea.batch,
                 "files transcribed at once; on a GPU their decode steps run batched (default 1: per-file wall "
                 "times that do not overlap)")
      ->check(CLI::Range(1, 64));
  ev->add_flag("--json", ea.json_out, "print one JSON object");
  ev->add_flag("--language-from-manifest", ea.language_from_manifest, "force each row's language");
  ev->add_option("--save", ea.save, "write per-file results (with tokens) to this JSON file");
  ev->add_option("--hyp-json", ea.hyp_json, "score another system's transcripts ({files: [{file, text}]})");
  CLI::Option* ev_inc = add_decode_options(ev, ea.decode);

  // wisp bench: GPU forward timing (src/runtime/gpu_bench.cpp, docs/cuda.md); CUDA builds only.
  wisp::runtime::BenchOptions bo;
  auto* bn = app.add_subcommand("bench", "Time the GPU encoder and greedy decode (CUDA builds)");
  bn->add_option("--random", bo.size, "random weights of this size (tiny|base|small|medium|large-v2|large-v3)");
  bn->add_option("-m,--model", bo.model_path, "engine file instead of random weights");
  bn->add_option("--batch", bo.batch, "30 s windows per batch")->check(CLI::Range(1, 4096));
  bn->add_option("--tokens", bo.tokens, "forced decode steps")->check(CLI::Range(1, 448));
  bn->add_option("--repeats", bo.repeats, "timed runs after one warm-up (median reported)")->check(CLI::Range(1, 100));
  bool bench_no_graphs = false;
  bn->add_flag("--no-graphs", bench_no_graphs, "launch every decode kernel eagerly (no CUDA graph)");
  bool bench_no_gemv = false;
  bn->add_flag("--no-gemv", bench_no_gemv, "decode-step linear layers through cuBLASLt instead of the GEMV kernels");
  bool bench_no_pdl = false;
  bn->add_option("--norms", bo.norms,
                 "decode-step layer norms folded into the GEMVs that consume them, as separate kernels, or auto "
                 "(folded for fp16 weights and at most 2 rows)")
      ->check(CLI::IsMember({"auto", "folded", "separate"}));
  bool bench_separate_kv_append = false;
  bn->add_flag("--separate-kv-append", bench_separate_kv_append,
               "decode-step K/V append as its own kernel instead of in the QKV GEMV's epilogue");
  bn->add_flag("--no-pdl", bench_no_pdl, "launch decode-step kernels without programmatic dependent launch");
  bn->add_option("--gemv-max-rows", bo.gemv_max_rows,
                 "measurement only: linear layers of up to this many rows on the GEMV kernels, every weight type "
                 "(up to 64; 0: 8 for fp16, 64 for int8/int4)")
      ->check(CLI::Range(0, 64));
  bn->add_option(
        "--gemv-wgmma", bo.gemv_wgmma,
        "measurement only: largest cluster of the Hopper (wgmma) kernel for 9..64 rows of fp16 / int8 weights; 0 "
        "runs them on the mma.sync kernel")
      ->check(CLI::Range(0, 8));
  bn->add_option("--attention-wgmma", bo.attention_wgmma,
                 "measurement only: 0 runs the encoder's attention on the mma.sync kernel instead of the Hopper "
                 "(wgmma) one");
  bn->add_option("--decoder-attention-mma", bo.decoder_attention_mma,
                 "measurement only: 0 runs the decode steps' attention on the CUDA cores instead of the tensor cores "
                 "(mma.sync)");
  bn->add_option("--encoder-gelu", bo.encoder_gelu,
                 "the encoder's GELU: tanh (the approximation, fused into cuBLASLt's epilogue; the default) or erf "
                 "(Whisper's, one more pass after the GEMM)")
      ->check(CLI::IsMember({"erf", "tanh"}));
  bn->add_option("--gemv-fill", bo.gemv_fill,
                 "measurement only: percent of the GPU's resident threads a decode-step GEMV fills")
      ->check(CLI::Range(1, 100));
  bn->add_option("--skip", bo.skip,
                 "measurement only: leave these decode-step parts out (comma list of norms, append, self_attention, "
                 "cross_attention, attention_linears, mlp, logits)");
  bn->add_option("--weights", bo.weights, "storage of the random weights' linear layers")
      ->check(CLI::IsMember({"fp16", "int8", "int4"}));
  bn->add_option("--group-size", bo.group, "int4 group size")->check(CLI::IsMember({64, 128}));
  bn->add_option("--kv-cache", bo.kv_cache, "K/V cache storage: fp16, int8, int8-dynamic, fp8")
      ->check(CLI::IsMember({"fp16", "int8", "int8-dynamic", "fp8"}));
  bool bench_json = false;
  bn->add_flag("--json", bench_json, "print one JSON object (for scripts) instead of the table");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end here with exit code 0; a bad command line is one "wisp: error:" line.
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
    std::string message = e.what();
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::fprintf(stderr, "wisp: error: %s (see wisp --help)\n", message.c_str());
    return e.get_exit_code();
  }
  ta.increment_given = tr_inc->count() > 0;
  ea.increment_given = ev_inc->count() > 0;
  try {
    if (*tr) return run_transcribe(ta);
    if (*cv) {
      wisp::ConvertOptions o;
      o.weights = conv_weights;
      o.group_size = conv_group;
      o.name = conv_name;
      o.activation_scaling = conv_act_scaling;
      o.keep_float = conv_keep_float;
      o.gptq = conv_gptq;
      wisp::convert(conv_src, conv_dst, o);
      std::printf("wrote %s\n", conv_dst.c_str());
      return 0;
    }
    if (*ev) return run_eval(ea);
    if (*ca) {
      const std::string model = resolve_model(cal_model);
      const std::string out = cal_out.empty() ? model : cal_out;
      wisp::CalibrateOptions co;
      co.input_grams = cal_grams;
      const wisp::CalibrationResult r = wisp::calibrate_kv_cache(model, cal_files, out, co);
      std::printf("calibrated on %d clips (%d windows, %ld decoder positions): wrote %s\n", r.clips, r.windows,
                  r.tokens, out.c_str());
      return 0;
    }
    if (*bn) {
      bo.cuda_graphs = !bench_no_graphs;
      bo.gemv = !bench_no_gemv;
      bo.programmatic_launch = !bench_no_pdl;
      bo.fused_kv_append = !bench_separate_kv_append;
      const wisp::runtime::BenchResult r = wisp::runtime::run_bench(bo);
      std::printf("%s\n", (bench_json ? wisp::runtime::bench_json(r) : wisp::runtime::bench_table(r)).c_str());
      return 0;
    }
  } catch (const wisp::Error& e) {
    std::fprintf(stderr, "wisp: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wisp: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
