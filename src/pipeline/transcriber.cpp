// The long-form transcription loop over 30 s windows ("seek"), a port of faster-whisper 1.2.1's
// generate_segments / generate_with_fallback / get_prompt: language detection on the first window, clips,
// a prompt built from the previous windows' text (and an initial prompt or prefix), beam search or greedy
// decoding at temperature 0 with a fallback to best-of sampling at higher temperatures, segments cut at
// timestamp pairs, the no-speech skip, word timestamps and the hallucination-silence skip.
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <semaphore>
#include <thread>

#include "audio/mel.h"
#include "decoding/beam_search.h"
#include "decoding/fallback.h"
#include "decoding/greedy.h"
#include "decoding/sampling.h"
#include "model/whisper.h"
#include "ops/ops.h"
#include "pipeline/kv_calibration.h"
#include "pipeline/model_access.h"
#include "pipeline/word_timing.h"
#include "runtime/gpu_network.h"
#include "runtime/gpu_whisper.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocabulary.h"
#include "wisp/audio.h"
#include "wisp/model.h"

namespace wisp {

using core::Tensor;

namespace {

constexpr int kFramesPerWindow = 3000;  // 30 s of 10 ms mel frames
constexpr int kInputStride = 2;         // mel frames per encoder position (the stride-2 convolution)
constexpr double kTimePerFrame = 0.01;
constexpr double kFramesPerSecond = 100.0;
constexpr double kTimePrecision = 0.02;  // seconds per timestamp token

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n\r\f\v");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\n\r\f\v");
  return s.substr(b, e - b + 1);
}

// Python's round() of a float to an int: to nearest, ties to even.
int py_round(double x) { return static_cast<int>(std::nearbyint(x)); }

double compression_ratio(const std::string& text) {
  if (text.empty()) return 0.0;
  uLongf bound = compressBound(static_cast<uLong>(text.size()));
  std::vector<Bytef> buf(bound);
  if (compress(buf.data(), &bound, reinterpret_cast<const Bytef*>(text.data()), static_cast<uLong>(text.size())) !=
      Z_OK) {
    return 0.0;
  }
  return static_cast<double>(text.size()) / static_cast<double>(bound);
}

void validate(const TranscribeOptions& o) {
  if (o.task != "transcribe" && o.task != "translate") {
    throw InvalidArgument("unknown task '" + o.task + "' (expected transcribe or translate)");
  }
  if (o.beam_size < 1) throw InvalidArgument("the beam size must be at least 1");
  if (o.best_of < 1) throw InvalidArgument("best_of must be at least 1");
  if (!(o.patience > 0)) throw InvalidArgument("the patience must be > 0");
  if (!std::isfinite(o.length_penalty)) throw InvalidArgument("the length penalty must be a number");
  if (o.temperatures.empty()) throw InvalidArgument("at least one temperature is needed");
  for (double t : o.temperatures) {
    if (!(t >= 0) || !std::isfinite(t)) throw InvalidArgument("temperatures must be >= 0");
  }
  for (double t : o.clip_timestamps) {
    if (!(t >= 0) || !std::isfinite(t)) throw InvalidArgument("clip timestamps must be >= 0 seconds");
  }
  if (!(o.max_initial_timestamp >= 0)) throw InvalidArgument("max_initial_timestamp must be >= 0");
  if (o.hallucination_silence_threshold && !o.word_timestamps) {
    throw InvalidArgument("--hallucination-silence-threshold requires --word-timestamps");
  }
  if (o.hallucination_silence_threshold && !(*o.hallucination_silence_threshold >= 0)) {
    throw InvalidArgument("the hallucination silence threshold must be >= 0 seconds");
  }
  if (o.parts < 1) throw InvalidArgument("parts must be at least 1");
  if (o.parts > 1 && !o.clip_timestamps.empty()) {
    throw InvalidArgument("parts and clip timestamps cannot be combined (the parts are clips themselves)");
  }
}

// Where to cut audio of `samples` into up to `parts` parts (TranscribeOptions::parts): near each equal
// division, the quietest 0.1 s (lowest energy, in steps of 10 ms) within 15 s of it, so that a cut rarely
// falls inside a word. Every part lasts at least kMinPartSeconds; empty when the audio is too short for two.
std::vector<double> part_cuts(std::span<const float> samples, int parts) {
  constexpr double kMinPartSeconds = 60.0, kSearchSeconds = 15.0;
  constexpr int kFrame = kSampleRate / 10, kHop = kSampleRate / 100;
  const double duration = static_cast<double>(samples.size()) / kSampleRate;
  const int n = std::min(parts, static_cast<int>(duration / kMinPartSeconds));
  std::vector<double> cuts;
  for (int k = 1; k < n; ++k) {
    const double target = duration * k / n;
    const double lo = std::max(target - kSearchSeconds, (cuts.empty() ? 0.0 : cuts.back()) + kMinPartSeconds / 2);
    const double hi = std::min(target + kSearchSeconds, duration - kMinPartSeconds / 2);
    double best_energy = -1.0, best = target;
    for (size_t at = static_cast<size_t>(lo * kSampleRate); at + kFrame <= static_cast<size_t>(hi * kSampleRate);
         at += kHop) {
      double energy = 0.0;
      for (size_t i = at; i < at + kFrame; ++i) energy += static_cast<double>(samples[i]) * samples[i];
      if (best_energy < 0 || energy < best_energy) best_energy = energy, best = (at + kFrame / 2.0) / kSampleRate;
    }
    cuts.push_back(std::round(best * 100.0) / 100.0);  // on a mel frame
  }
  return cuts;
}

// Holds one place of a semaphore (none when null) for its lifetime.
class DevicePlace {
 public:
  explicit DevicePlace(std::counting_semaphore<64>* places) : places_(places) {
    if (places_) places_->acquire();
  }
  ~DevicePlace() {
    if (places_) places_->release();
  }
  DevicePlace(const DevicePlace&) = delete;
  DevicePlace& operator=(const DevicePlace&) = delete;

 private:
  std::counting_semaphore<64>* places_;
};

}  // namespace

struct Model::Impl {
  std::shared_ptr<const model::WhisperModel> net;
  tokenizer::Tokenizer tok;
  LogMel mel;
  int concurrency = 1;  // LoadOptions::concurrency: transcriptions (or parts of one) that may run at once
  // With a device backend: places for `concurrency` seek loops at once (each holds device slots); more callers
  // (Model::transcribe from more threads) wait for a place instead of running out of slots.
  std::unique_ptr<std::counting_semaphore<64>> device_places;
  int cpu_threads = 0;  // LoadOptions::threads (all cores when not given), shared by the concurrent transcriptions;
                        // 0: leave the calling thread's count as it is

  Impl(std::shared_ptr<const model::WhisperModel> m)
      : net(std::move(m)),
        tok(net->vocabulary(), tokenizer::find_special_tokens(net->vocabulary())),
        mel(net->dims().n_mels) {
    set_concurrency(1);
  }

  void set_concurrency(int n) {
    concurrency = n;
    device_places = net->device_concurrency() > 0 ? std::make_unique<std::counting_semaphore<64>>(n) : nullptr;
  }

  // Window [n_mels, 3000] of `mel_all` [n_mels, n_frames] starting at `seek`, `size` frames of content,
  // the rest zero (as the reference pads the log-mel features).
  Tensor window(const std::vector<float>& mel_all, int n_frames, int seek, int size) const {
    const int n_mels = net->dims().n_mels;
    Tensor w = Tensor::zeros({n_mels, kFramesPerWindow}, core::DType::kF32);
    float* dst = w.data<float>();
    const int count = std::min(size, kFramesPerWindow);
    for (int m = 0; m < n_mels; ++m) {
      std::memcpy(dst + static_cast<size_t>(m) * kFramesPerWindow,
                  mel_all.data() + static_cast<size_t>(m) * n_frames + seek, static_cast<size_t>(count) * 4);
    }
    return w;
  }

  // Splits a window's tokens into segments at consecutive timestamp pairs (_split_segments_by_timestamps);
  // returns the next seek and sets `single_timestamp_ending`.
  int split_segments(const std::vector<int>& tokens, double time_offset, int seek, int segment_size,
                     std::vector<pipeline::WindowSegment>& out, bool& single_timestamp_ending) const {
    const int ts = tok.special().timestamp_begin;
    const size_t n = tokens.size();
    single_timestamp_ending = n >= 2 && tokens[n - 2] < ts && tokens[n - 1] >= ts;
    std::vector<size_t> consecutive;
    for (size_t i = 1; i < n; ++i) {
      if (tokens[i] >= ts && tokens[i - 1] >= ts) consecutive.push_back(i);
    }
    if (!consecutive.empty()) {
      if (single_timestamp_ending) consecutive.push_back(n);
      size_t last = 0;
      for (size_t cut : consecutive) {
        pipeline::WindowSegment s;
        s.tokens.assign(tokens.begin() + static_cast<long>(last), tokens.begin() + static_cast<long>(cut));
        s.start = time_offset + (s.tokens.front() - ts) * kTimePrecision;
        s.end = time_offset + (s.tokens.back() - ts) * kTimePrecision;
        out.push_back(std::move(s));
        last = cut;
      }
      if (single_timestamp_ending) return seek + segment_size;
      // The window ended mid-segment: resume at the last complete segment's end.
      return seek + (tokens[last - 1] - ts) * kInputStride;
    }
    double duration = segment_size * kTimePerFrame;
    int last_ts = -1;
    for (int t : tokens) {
      if (t >= ts) last_ts = t;
    }
    if (last_ts >= 0 && last_ts != ts) duration = (last_ts - ts) * kTimePrecision;
    pipeline::WindowSegment s;
    s.tokens = tokens;
    s.start = time_offset;
    s.end = time_offset + duration;
    out.push_back(std::move(s));
    return seek + segment_size;
  }

  // get_suppressed_tokens: -1 expands to the model's non-speech symbols; the task and control tokens are
  // added to any non-empty list.
  std::vector<int> suppressed_tokens(const std::vector<int>& requested) const {
    const auto& sp = tok.special();
    std::vector<int> ids;
    if (requested.empty()) return ids;
    for (int id : requested) {
      if (id == -1) {
        ids.insert(ids.end(), net->metadata().suppress_tokens.begin(), net->metadata().suppress_tokens.end());
      } else if (id < 0 || id >= net->dims().n_vocab) {
        throw InvalidArgument("suppress token " + std::to_string(id) + " is not a token of this model");
      } else {
        ids.push_back(id);
      }
    }
    for (int id : {sp.transcribe, sp.translate, sp.sot, sp.sot_prev, sp.sot_lm, sp.no_speech}) {
      if (id >= 0) ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
  }

  // The language of the window at `seek` (`size` frames of content) and its encoder output.
  struct Detection {
    model::CrossKV window;
    int token = -1;
    double probability = 0.0;
  };
  Detection detect(const std::vector<float>& mel_all, int n_frames, int seek, int size) const {
    Detection d;
    d.window = net->encode_window(window(mel_all, n_frames, seek, size));
    const auto probs = decoding::detect_language(*net, d.window, tok.special(), net->metadata().lang_ids);
    d.token = probs.front().first;
    d.probability = probs.front().second;
    return d;
  }

  Transcript run(std::span<const float> samples, const TranscribeOptions& o) const {
    if (samples.empty()) throw AudioError("the audio contains no samples");
    validate(o);
    // The whole recording's log-mel on the GPU when the model runs there (the CPU's FFTW path otherwise).
    std::vector<float> mel_all = net->device_log_mel(samples);
    if (mel_all.empty()) mel_all = mel.compute(samples);
    const int parts = std::min(o.parts, concurrency);
    if (parts > 1) {
      const std::vector<double> cuts = part_cuts(samples, parts);
      if (!cuts.empty()) return run_parts(samples, mel_all, cuts, o);
    }
    return run_window_loop(samples, mel_all, o);
  }

  // Long audio as parts transcribed at once (TranscribeOptions::parts), each its own seek loop over the clip
  // between two cuts (seconds), on its own thread; the language is detected once, on the first window.
  Transcript run_parts(std::span<const float> samples, const std::vector<float>& mel_all,
                       const std::vector<double>& cuts, const TranscribeOptions& o) const {
    TranscribeOptions base = o;
    base.parts = 1;
    double language_probability = 1.0;
    if (tok.multilingual() && o.language == "auto") {
      const int n_frames = mel.n_frames(samples.size(), 160);
      const Detection d = detect(mel_all, n_frames, 0, std::min(n_frames - 1, kFramesPerWindow));
      base.language = tok.language_code(d.token);
      language_probability = d.probability;
    }
    // The caller's callbacks are called from one thread at a time; progress is the sum over the parts.
    std::mutex callback_mu;
    std::vector<double> done(cuts.size() + 1, 0.0);
    const double total = static_cast<double>(samples.size()) / kSampleRate;
    std::vector<Transcript> results(cuts.size() + 1);
    std::vector<std::exception_ptr> errors(results.size());
    const auto run_part = [&](size_t k) {
      try {
        TranscribeOptions p = base;
        const double start = k == 0 ? 0.0 : cuts[k - 1];
        p.clip_timestamps = {start};
        if (k < cuts.size()) p.clip_timestamps.push_back(cuts[k]);
        if (k > 0) {
          p.prefix.clear();  // forced on the first window of the audio only
          if (!p.carry_initial_prompt) p.initial_prompt.clear();
        }
        if (o.on_window) {
          p.on_window = [&](const WindowTrace& w) {
            std::lock_guard<std::mutex> lock(callback_mu);
            o.on_window(w);
          };
        }
        if (o.on_progress) {
          p.on_progress = [&, k, start](double at, double) {
            std::lock_guard<std::mutex> lock(callback_mu);
            done[k] = at - start;
            double sum = 0;
            for (double d : done) sum += d;
            o.on_progress(std::min(sum, total), total);
          };
        }
        results[k] = run_window_loop(samples, mel_all, p);
      } catch (...) {
        errors[k] = std::current_exception();
      }
    };
    std::vector<std::thread> threads;
    for (size_t k = 1; k < results.size(); ++k) threads.emplace_back(run_part, k);
    run_part(0);
    for (auto& t : threads) t.join();
    for (const auto& e : errors) {
      if (e) std::rethrow_exception(e);
    }
    Transcript merged = std::move(results[0]);
    merged.language_probability = language_probability;
    for (size_t k = 1; k < results.size(); ++k) {
      for (Segment& s : results[k].segments) merged.segments.push_back(std::move(s));
    }
    for (size_t i = 0; i < merged.segments.size(); ++i) merged.segments[i].id = static_cast<int>(i) + 1;
    return merged;
  }

  // The reference's seek loop over the whole audio (or its clips).
  Transcript run_window_loop(std::span<const float> samples, const std::vector<float>& mel_all,
                             const TranscribeOptions& o) const {
    // This thread's share of the CPU threads: transcriptions running at once split them rather than each
    // starting all of them (and a worker thread would otherwise get the process default, not LoadOptions').
    if (cpu_threads > 0) ops::set_num_threads_of_this_thread(std::max(1, cpu_threads / concurrency));
    const auto& sp = tok.special();
    const auto& dims = net->dims();
    if (!tok.multilingual()) {
      if (o.task == "translate") throw InvalidArgument("this model is English-only: it cannot translate");
      if (o.language != "auto" && o.language != "en") {
        throw InvalidArgument("this model is English-only: --language " + o.language + " is not supported");
      }
    }
    int language_token = -1;
    if (tok.multilingual() && o.language != "auto") {
      const auto t = tok.language_token(o.language);
      if (!t) throw InvalidArgument("unknown language '" + o.language + "'");
      language_token = *t;
    }

    decoding::FilterConfig filters;
    filters.suppress = suppressed_tokens(o.suppress_tokens);
    if (o.suppress_blank) filters.suppress_begin = net->metadata().suppress_tokens_begin;
    filters.timestamps = o.timestamps;
    filters.max_initial_timestamp_index = py_round(o.max_initial_timestamp / kTimePrecision);

    // A place among the seek loops the device holds state for, released when this one ends.
    const DevicePlace place(device_places.get());
    // From here on this thread's device calls may be batched with other transcriptions' (GPU backend).
    const std::shared_ptr<void> concurrent = net->begin_transcription();
    const int n_frames = mel.n_frames(samples.size(), 160);
    const int content_frames = n_frames - 1;
    const double content_duration = content_frames * kTimePerFrame;
    Transcript result;
    result.duration = static_cast<double>(samples.size()) / kSampleRate;

    // Clips: pairs of seek points (mel frames); an odd list runs its last clip to the end.
    std::vector<int> seek_points;
    for (double t : o.clip_timestamps) seek_points.push_back(py_round(t * kFramesPerSecond));
    if (seek_points.empty()) seek_points.push_back(0);
    if (seek_points.size() % 2 == 1) seek_points.push_back(content_frames);
    std::vector<std::pair<int, int>> clips;
    for (size_t i = 0; i + 1 < seek_points.size(); i += 2) clips.emplace_back(seek_points[i], seek_points[i + 1]);

    // Language detection reads 30 s from the first clip's start (the start of the audio if that is past
    // the end). When the first decoding window covers the same frames its encoder output serves both (the
    // reference encodes it twice; its detection window differs by at most the final padding frame).
    std::optional<model::CrossKV> first_window;
    int first_window_seek = -1, first_window_size = -1;
    if (tok.multilingual() && language_token < 0) {
      const double start = o.clip_timestamps.empty() ? 0.0 : o.clip_timestamps.front();
      const int det_seek = start * kFramesPerSecond < content_frames ? static_cast<int>(start * kFramesPerSecond) : 0;
      const int det_size = std::min(content_frames - det_seek, kFramesPerWindow);
      Detection d = detect(mel_all, n_frames, det_seek, det_size);
      first_window = std::move(d.window);
      first_window_seek = det_seek;
      first_window_size = det_size;
      language_token = d.token;
      result.language_probability = d.probability;
    } else {
      result.language_probability = 1.0;
    }
    result.language = tok.multilingual() ? tok.language_code(language_token) : "en";

    std::vector<int> sot_sequence = {sp.sot};
    if (tok.multilingual()) {
      sot_sequence.push_back(language_token);
      sot_sequence.push_back(o.task == "translate" ? sp.translate : sp.transcribe);
    }

    const int max_length = dims.n_text_ctx;
    const size_t max_previous = static_cast<size_t>(max_length / 2 - 1);
    std::vector<int> all_tokens;
    std::vector<int> initial_prompt_tokens;
    if (!o.initial_prompt.empty()) {
      initial_prompt_tokens = tok.encode(" " + strip(o.initial_prompt));
      all_tokens = initial_prompt_tokens;
    }
    std::vector<int> prefix_tokens;
    if (!o.prefix.empty()) {
      prefix_tokens = tok.encode(" " + strip(o.prefix));
      if (prefix_tokens.size() >= static_cast<size_t>(max_length / 2)) prefix_tokens.resize(max_previous);
    }
    size_t prompt_reset_since = 0;
    double last_speech_timestamp = 0.0;
    decoding::Rng rng(o.seed);
    pipeline::WordTimingOptions word_options;
    word_options.prepend_punctuations = o.prepend_punctuations;
    word_options.append_punctuations = o.append_punctuations;

    size_t clip_idx = 0;
    int seek = clips.front().first;
    while (clip_idx < clips.size()) {
      const int clip_start = clips[clip_idx].first;
      const int clip_end = std::min(clips[clip_idx].second, content_frames);
      if (seek < clip_start) seek = clip_start;
      if (seek >= clip_end) {
        if (++clip_idx < clips.size()) seek = clips[clip_idx].first;
        continue;
      }
      const double time_offset = seek * kTimePerFrame;
      const double window_end_time = (seek + kFramesPerWindow) * kTimePerFrame;
      const int segment_size = std::min({kFramesPerWindow, content_frames - seek, clip_end - seek});
      const double segment_duration = segment_size * kTimePerFrame;
      const model::CrossKV cross = (first_window && seek == first_window_seek && segment_size == first_window_size)
                                       ? std::move(*first_window)
                                       : net->encode_window(window(mel_all, n_frames, seek, segment_size));
      first_window.reset();

      // The previous text: everything since the last prompt reset, or with carry_initial_prompt the
      // initial prompt followed by as much recent text as still fits.
      std::vector<int> previous;
      if (o.carry_initial_prompt && !initial_prompt_tokens.empty()) {
        const size_t ignored = std::max(initial_prompt_tokens.size(), prompt_reset_since);
        const size_t room =
            max_previous > initial_prompt_tokens.size() ? max_previous - initial_prompt_tokens.size() : 0;
        previous = initial_prompt_tokens;
        if (all_tokens.size() > ignored) {
          const size_t take = std::min(room, all_tokens.size() - ignored);
          previous.insert(previous.end(), all_tokens.end() - static_cast<long>(take), all_tokens.end());
        }
      } else {
        previous.assign(all_tokens.begin() + static_cast<long>(prompt_reset_since), all_tokens.end());
      }

      // get_prompt: [<|startofprev|> previous (last 223)] SOT sequence [<|notimestamps|>] [<|0.00|> prefix]
      std::vector<int> prompt;
      if (!previous.empty()) {
        prompt.push_back(sp.sot_prev);
        const size_t keep = std::min(previous.size(), max_previous);
        prompt.insert(prompt.end(), previous.end() - static_cast<long>(keep), previous.end());
      }
      const size_t sot_index = prompt.size();
      prompt.insert(prompt.end(), sot_sequence.begin(), sot_sequence.end());
      if (!o.timestamps) prompt.push_back(sp.no_timestamps);
      // CTranslate2 decodes min(224, 448 - (prompt - 1)) steps, a forced prefix included.
      const int max_steps = std::min(max_length / 2, max_length + 1 - static_cast<int>(prompt.size()));
      size_t n_forced = 0;
      if (seek == 0 && !prefix_tokens.empty()) {
        // Forced output (CTranslate2's prefix): returned with the result, scored 0.
        if (o.timestamps) prompt.push_back(sp.timestamp_begin);
        prompt.insert(prompt.end(), prefix_tokens.begin(), prefix_tokens.end());
        n_forced = prefix_tokens.size() + (o.timestamps ? 1 : 0);
      }
      const int max_new = max_steps - static_cast<int>(n_forced);
      if (max_new < 1) throw InvalidArgument("the prompt and prefix leave no room in the decoder context");

      const decoding::FilterConfig& window_filters = filters;
      const decoding::PromptState ps = decoding::run_prompt(*net, cross, prompt, sot_index, sp, n_forced);
      decoding::FallbackRules rules;
      rules.temperatures = o.temperatures;
      rules.compression_ratio_threshold = o.compression_ratio_threshold;
      rules.logprob_threshold = o.logprob_threshold;
      rules.no_speech_threshold = o.no_speech_threshold;
      const decoding::FallbackResult fr = decoding::generate_with_fallback(
          rules,
          [&](double temperature) {
            if (temperature > 0) {
              decoding::SamplingOptions so;
              so.temperature = temperature;
              so.best_of = o.best_of;
              so.length_penalty = o.length_penalty;
              return decoding::decode_sampling(*net, cross, ps, window_filters, sp, max_new, so, rng);
            }
            if (o.beam_size > 1) {
              decoding::BeamOptions bo;
              bo.beam_size = o.beam_size;
              bo.patience = o.patience;
              bo.length_penalty = o.length_penalty;
              return decoding::decode_beam(*net, cross, ps, window_filters, sp, max_new, bo);
            }
            return decoding::decode_greedy(*net, cross, ps, window_filters, sp, max_new);
          },
          [&](const decoding::WindowResult& r) { return compression_ratio(strip(tok.decode(r.tokens))); });
      const decoding::WindowResult& r = fr.result;

      bool skip = false;
      if (o.no_speech_threshold) {
        skip = r.no_speech_prob > *o.no_speech_threshold;
        if (o.logprob_threshold && r.avg_logprob > *o.logprob_threshold) skip = false;
      }
      if (o.on_window) {
        WindowTrace trace;
        trace.seek = seek;
        trace.prompt = prompt;
        trace.tokens = r.tokens;
        trace.temperature = fr.temperature;
        trace.attempts = fr.attempts;
        trace.avg_logprob = r.avg_logprob;
        trace.compression_ratio = fr.compression_ratio;
        trace.no_speech_prob = r.no_speech_prob;
        trace.skipped = skip;
        o.on_window(trace);
      }
      if (skip) {
        seek += segment_size;  // fast-forward to the next window
        continue;
      }

      const int previous_seek = seek;
      std::vector<pipeline::WindowSegment> segs;
      bool single_timestamp_ending = false;
      seek = split_segments(r.tokens, time_offset, seek, segment_size, segs, single_timestamp_ending);

      if (o.word_timestamps) {
        pipeline::align_words(segs, *net, cross, tok, sot_sequence, previous_seek, segment_size, last_speech_timestamp,
                              word_options);
        if (!single_timestamp_ending) {
          const auto end = pipeline::last_word_end(segs);
          if (end && *end > time_offset) seek = py_round(*end * kFramesPerSecond);
        }
        if (o.hallucination_silence_threshold) {
          const double threshold = *o.hallucination_silence_threshold;
          auto next_with_words = [&](size_t from) -> const pipeline::WindowSegment* {
            for (size_t i = from; i < segs.size(); ++i) {
              if (!segs[i].words.empty()) return &segs[i];
            }
            return nullptr;
          };
          // A likely hallucination first in the window after a long silence: skip the silence, drop the window.
          const pipeline::WindowSegment* first = next_with_words(0);
          if (first && pipeline::is_segment_anomaly(first->words)) {
            const double gap = first->start - time_offset;
            if (gap > threshold) {
              seek = previous_seek + py_round(gap * kFramesPerSecond);
              continue;
            }
          }
          // A likely hallucination between silences (or other hallucinations): drop it and what follows,
          // and resume at its start.
          double hal_last_end = last_speech_timestamp;
          for (size_t si = 0; si < segs.size(); ++si) {
            const pipeline::WindowSegment& s = segs[si];
            if (s.words.empty()) continue;
            if (pipeline::is_segment_anomaly(s.words)) {
              const pipeline::WindowSegment* next = next_with_words(si + 1);
              const double hal_next_start = next ? next->words.front().start : time_offset + segment_duration;
              const bool silence_before =
                  s.start - hal_last_end > threshold || s.start < threshold || s.start - time_offset < 2.0;
              const bool silence_after = hal_next_start - s.end > threshold ||
                                         (next && pipeline::is_segment_anomaly(next->words)) ||
                                         window_end_time - s.end < 2.0;
              if (silence_before && silence_after) {
                seek = py_round(std::max(time_offset + 1, s.start) * kFramesPerSecond);
                if (content_duration - s.end < threshold) seek = content_frames;
                segs.erase(segs.begin() + static_cast<long>(si), segs.end());
                break;
              }
            }
            hal_last_end = s.end;
          }
        }
        if (const auto end = pipeline::last_word_end(segs)) last_speech_timestamp = *end;
      }

      for (auto& s : segs) {
        const std::string text = tok.decode(s.tokens);
        if (s.start == s.end || strip(text).empty()) continue;
        all_tokens.insert(all_tokens.end(), s.tokens.begin(), s.tokens.end());
        Segment out;
        out.id = static_cast<int>(result.segments.size()) + 1;
        out.seek = previous_seek;
        out.start = s.start;
        out.end = s.end;
        out.text = text;
        out.tokens = std::move(s.tokens);
        out.temperature = fr.temperature;
        out.avg_logprob = r.avg_logprob;
        out.compression_ratio = fr.compression_ratio;
        out.no_speech_prob = r.no_speech_prob;
        out.words = std::move(s.words);
        result.segments.push_back(std::move(out));
      }
      if (!o.condition_on_previous_text || fr.temperature > o.prompt_reset_on_temperature) {
        prompt_reset_since = all_tokens.size();
      }
      if (o.on_progress) o.on_progress(std::min(seek, content_frames) * kTimePerFrame, content_frames * kTimePerFrame);
    }
    return result;
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<Model> ModelAccess::wrap(std::shared_ptr<const model::WhisperModel> net) {
  return std::unique_ptr<Model>(new Model(std::make_unique<Model::Impl>(std::move(net))));
}
Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& path, const LoadOptions& options) {
  const std::string& device = options.device;
  if (device != "auto" && device != "cpu" && device != "cuda") {
    throw InvalidArgument("unknown device '" + device + "' (expected auto, cpu or cuda)");
  }
  runtime::GpuNetworkOptions gpu_options;
  try {
    gpu_options.kv_cache = runtime::kv_cache_from_name(options.kv_cache);
    if (options.encoder_gelu != "auto") {
      gpu_options.encoder_gelu = runtime::encoder_gelu_from_name(options.encoder_gelu);
    }
  } catch (const std::invalid_argument& e) {
    throw InvalidArgument(e.what());
  }
  if (options.concurrency < 1 || options.concurrency > 64) {
    throw InvalidArgument("concurrency must be between 1 and 64, got " + std::to_string(options.concurrency));
  }
  gpu_options.transcriptions = options.concurrency;
  gpu_options.device_token_choice = options.device_token_choice;
  if (options.threads > 0) ops::set_num_threads(options.threads);
  const bool gpu = device == "cuda" || (device == "auto" && runtime::gpu_available());
  model::DeviceFactory factory;
  if (!gpu && options.encoder_gelu == "tanh") {
    throw InvalidArgument("--encoder-gelu tanh needs the GPU (the CPU model computes Whisper's erf GELU)");
  }
  if (!gpu && options.kv_cache != "fp16") {
    if (!options.round_kv_on_cpu) {
      throw InvalidArgument("--kv-cache " + options.kv_cache + " needs the GPU (the CPU keeps fp32 caches)");
    }
    static constexpr KvRounding kRounding[] = {KvRounding::kNone, KvRounding::kInt8, KvRounding::kInt8Dynamic,
                                               KvRounding::kFp8};
    const KvRounding rounding = kRounding[static_cast<int>(gpu_options.kv_cache)];
    factory = [rounding](const model::WhisperModel& m) { return make_rounding_backend(m.path(), rounding); };
  }
  if (gpu) {
    factory = [gpu_options](const model::WhisperModel& m) -> std::unique_ptr<model::DeviceBackend> {
      if (!runtime::gpu_available()) {
        throw InvalidArgument(
            "--device cuda: no CUDA GPU of compute capability 8.0 or newer is visible (or this wisp was built "
            "without CUDA)");
      }
      try {
        return runtime::make_gpu_backend(m, gpu_options);
      } catch (const Error&) {
        throw;
      } catch (const std::exception& e) {
        throw InvalidArgument(std::string("cannot run this model on the GPU: ") + e.what());
      }
    };
  }
  auto impl = std::make_unique<Impl>(model::WhisperModel::load(path, factory));
  const int device_limit = impl->net->device_concurrency();
  impl->set_concurrency(device_limit > 0 ? std::min(options.concurrency, device_limit) : options.concurrency);
  impl->cpu_threads = options.threads > 0 ? options.threads : ops::num_threads();
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

Transcript Model::transcribe(std::span<const float> samples, const TranscribeOptions& options) const {
  return impl_->run(samples, options);
}

ModelInfo Model::info() const {
  const auto& d = impl_->net->dims();
  ModelInfo i;
  i.path = impl_->net->path();
  i.name = impl_->net->metadata().name;
  i.multilingual = impl_->tok.multilingual();
  i.n_mels = d.n_mels;
  i.n_vocab = d.n_vocab;
  i.n_audio_layer = d.n_audio_layer;
  i.n_text_layer = d.n_text_layer;
  i.n_state = d.n_audio_state;
  i.n_head = d.n_audio_head;
  i.device = impl_->net->device_name();
  i.concurrency = impl_->concurrency;
  return i;
}

}  // namespace wisp
