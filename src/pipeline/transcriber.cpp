// The long-form transcription loop over 30 s windows ("seek"), as the reference implementation runs it:
// language detection on the first window, a prompt built from the previous windows' text, greedy
// decoding with the timestamp rules, segments cut at timestamp pairs, and the no-speech skip.
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "audio/mel.h"
#include "decoding/greedy.h"
#include "model/whisper.h"
#include "ops/ops.h"
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
constexpr double kTimePrecision = 0.02;  // seconds per timestamp token

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n\r\f\v");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\n\r\f\v");
  return s.substr(b, e - b + 1);
}

double compression_ratio(const std::string& text) {
  if (text.empty()) return 0.0;
  uLongf bound = compressBound(static_cast<uLong>(text.size()));
  std::vector<Bytef> buf(bound);
  if (compress(buf.data(), &bound, reinterpret_cast<const Bytef*>(text.data()), static_cast<uLong>(text.size())) != Z_OK) {
    return 0.0;
  }
  return static_cast<double>(text.size()) / static_cast<double>(bound);
}

struct RawSegment {
  double start, end;
  std::vector<int> tokens;
};

}  // namespace

struct Model::Impl {
  std::shared_ptr<const model::WhisperModel> net;
  tokenizer::Tokenizer tok;
  LogMel mel;

  Impl(std::shared_ptr<const model::WhisperModel> m)
      : net(std::move(m)),
        tok(net->vocabulary(), tokenizer::find_special_tokens(net->vocabulary())),
        mel(net->dims().n_mels) {}

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

  // Splits a window's tokens into segments at consecutive timestamp pairs; returns the next seek.
  int split_segments(const std::vector<int>& tokens, double time_offset, int seek, int segment_size,
                     std::vector<RawSegment>& out) const {
    const int ts = tok.special().timestamp_begin;
    const size_t n = tokens.size();
    const bool single_timestamp_ending = n >= 2 && tokens[n - 2] < ts && tokens[n - 1] >= ts;
    std::vector<size_t> consecutive;
    for (size_t i = 1; i < n; ++i) {
      if (tokens[i] >= ts && tokens[i - 1] >= ts) consecutive.push_back(i);
    }
    if (!consecutive.empty()) {
      if (single_timestamp_ending) consecutive.push_back(n);
      size_t last = 0;
      for (size_t cut : consecutive) {
        std::vector<int> slice(tokens.begin() + static_cast<long>(last), tokens.begin() + static_cast<long>(cut));
        const double start = time_offset + (slice.front() - ts) * kTimePrecision;
        const double end = time_offset + (slice.back() - ts) * kTimePrecision;
        out.push_back({start, end, std::move(slice)});
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
    out.push_back({time_offset, time_offset + duration, tokens});
    return seek + segment_size;
  }

  Transcript run(std::span<const float> samples, const TranscribeOptions& o) const {
    if (samples.empty()) throw AudioError("the audio contains no samples");
    const auto& sp = tok.special();
    const auto& dims = net->dims();
    if (o.task != "transcribe" && o.task != "translate") {
      throw InvalidArgument("unknown task '" + o.task + "' (expected transcribe or translate)");
    }
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

    const std::vector<float> mel_all = mel.compute(samples);
    const int n_frames = mel.n_frames(samples.size(), 160);
    const int content_frames = n_frames - 1;
    Transcript result;
    result.duration = static_cast<double>(samples.size()) / kSampleRate;

    // The first window's encoder output serves both language detection and decoding (the reference
    // encodes it twice; its detection window differs from the decoding window by at most the final
    // padding frame).
    std::optional<model::CrossKV> first_window;
    if (tok.multilingual() && language_token < 0) {
      const Tensor feats = net->encode(window(mel_all, n_frames, 0, std::min(content_frames, kFramesPerWindow)));
      first_window = net->cross_kv(feats);
      const auto probs = decoding::detect_language(*net, *first_window, sp, net->metadata().lang_ids);
      language_token = probs.front().first;
      result.language_probability = probs.front().second;
    } else {
      result.language_probability = 1.0;
    }
    result.language = tok.multilingual() ? tok.language_code(language_token) : "en";

    std::vector<int> sot_sequence = {sp.sot};
    if (tok.multilingual()) {
      sot_sequence.push_back(language_token);
      sot_sequence.push_back(o.task == "translate" ? sp.translate : sp.transcribe);
    }

    decoding::FilterConfig filters;
    // The reference suppresses the non-speech symbols and the task/control tokens at every step.
    filters.suppress = net->metadata().suppress_tokens;
    for (int id : {sp.transcribe, sp.translate, sp.sot, sp.sot_prev, sp.sot_lm, sp.no_speech}) {
      if (id >= 0) filters.suppress.push_back(id);
    }
    if (o.suppress_blank) filters.suppress_begin = net->metadata().suppress_tokens_begin;
    filters.timestamps = o.timestamps;
    filters.max_initial_timestamp_index = static_cast<int>(std::lround(o.max_initial_timestamp / kTimePrecision));

    std::vector<int> all_tokens;
    if (!strip(o.initial_prompt).empty()) all_tokens = tok.encode(" " + strip(o.initial_prompt));
    size_t prompt_reset_since = 0;
    const int max_length = dims.n_text_ctx;

    int seek = 0;
    while (seek < content_frames) {
      const double time_offset = seek * kTimePerFrame;
      const int segment_size = std::min(kFramesPerWindow, content_frames - seek);
      const model::CrossKV cross = (seek == 0 && first_window)
                                       ? std::move(*first_window)
                                       : net->cross_kv(net->encode(window(mel_all, n_frames, seek, segment_size)));
      first_window.reset();

      std::vector<int> prompt;
      const std::vector<int> previous(all_tokens.begin() + static_cast<long>(prompt_reset_since), all_tokens.end());
      if (!previous.empty()) {
        prompt.push_back(sp.sot_prev);
        const size_t keep = std::min(previous.size(), static_cast<size_t>(max_length / 2 - 1));
        prompt.insert(prompt.end(), previous.end() - static_cast<long>(keep), previous.end());
      }
      const size_t sot_index = prompt.size();
      prompt.insert(prompt.end(), sot_sequence.begin(), sot_sequence.end());
      if (!o.timestamps) prompt.push_back(sp.no_timestamps);

      const int max_new = std::min(max_length / 2, max_length - static_cast<int>(prompt.size() - 1));
      const decoding::WindowResult r = decoding::decode_greedy(*net, cross, prompt, sot_index, filters, sp, max_new);

      const std::string window_text = strip(tok.decode(r.tokens));
      const double ratio = compression_ratio(window_text);
      const bool silent = r.no_speech_prob > o.no_speech_threshold && !(r.avg_logprob > o.logprob_threshold);
      if (silent) {
        seek += segment_size;
      } else {
        const int previous_seek = seek;
        std::vector<RawSegment> segs;
        seek = split_segments(r.tokens, time_offset, seek, segment_size, segs);
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
          out.temperature = 0.0;
          out.avg_logprob = r.avg_logprob;
          out.compression_ratio = ratio;
          out.no_speech_prob = r.no_speech_prob;
          result.segments.push_back(std::move(out));
        }
      }
      if (!o.condition_on_previous_text) prompt_reset_since = all_tokens.size();
      if (o.on_progress) o.on_progress(std::min(seek, content_frames) * kTimePerFrame, content_frames * kTimePerFrame);
    }
    return result;
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& path, int threads) {
  if (threads > 0) ops::set_num_threads(threads);
  return std::unique_ptr<Model>(new Model(std::make_unique<Impl>(model::WhisperModel::load(path))));
}

Transcript Model::transcribe(std::span<const float> samples, const TranscribeOptions& options) const {
  return impl_->run(samples, options);
}

Transcript Model::transcribe_file(const std::string& path, const TranscribeOptions& options) const {
  const std::vector<float> samples = load_audio(path);
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
  return i;
}

}  // namespace wisp
