// load_audio(): FFmpeg demux + decode of the best audio stream, then libswresample to 16 kHz mono s16.
//
// The conversion chain deliberately mirrors faster-whisper's decode_audio (PyAV AudioResampler with
// format=s16, layout=mono, rate=16000, then int16 / 32768): PyAV's resampler is an aformat filter that
// auto-inserts aresample, i.e. a SwrContext with default options, so a SwrContext built from the first
// decoded frame with the same input/output parameters yields the same samples (one default differs between
// FFmpeg versions and is pinned below). Going through s16 (instead of asking swr for float directly) costs a
// little precision but keeps us bit-compatible with the reference, so the mel features and therefore the
// transcripts match. Measured on the 72 eval clips: 67 bit-identical, the other 5 (aac, vorbis, opus) differ
// by 1 LSB in at most 14 samples, from decoder changes between the system FFmpeg and PyAV's.

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/error.h>
#include <libavutil/log.h>
#include <libavutil/opt.h>
#include <libavutil/samplefmt.h>
#include <libswresample/swresample.h>
}

#include "wisp/audio.h"
#include "wisp/errors.h"

namespace wisp {
namespace {

// FFmpeg logs decoder warnings (e.g. "invalid frame size") to stderr; a library must not chatter, and every
// failure that matters reaches the caller as an exception instead.
void silence_ffmpeg_log() {
  static std::once_flag once;
  std::call_once(once, [] { av_log_set_level(AV_LOG_QUIET); });
}

std::string av_error_text(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  if (av_strerror(err, buf, sizeof(buf)) < 0) return "error " + std::to_string(err);
  return buf;
}

struct FormatCloser {
  void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct CodecFreer {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct PacketFreer {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct FrameFreer {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct SwrFreer {
  void operator()(SwrContext* s) const { swr_free(&s); }
};

// Checks up front that the path names a readable regular file, so that "missing" and "permission denied"
// surface as IoError with the OS reason rather than as whatever FFmpeg's probing makes of them.
void check_readable(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    throw IoError("cannot open audio file '" + path + "': no such file");
  }
  if (std::filesystem::is_directory(status)) {
    throw IoError("cannot open audio file '" + path + "': is a directory");
  }
  std::ifstream probe(path, std::ios::binary);
  if (!probe) {
    throw IoError("cannot open audio file '" + path + "': " + std::generic_category().message(errno));
  }
}

// Converts decoded frames of one input format to 16 kHz mono s16 and appends them to `out`. Built lazily
// from the first frame (as PyAV does), and rebuilt if a stream changes format midway (some mp3/aac
// streams switch sample rate or channel count), flushing the old converter first so no samples are lost.
class MonoResampler {
 public:
  explicit MonoResampler(const std::string& path) : path_(path) {}

  void push(const AVFrame& frame, std::vector<int16_t>& out) {  // out: [n_samples] 16 kHz mono
    if (frame.nb_samples <= 0) return;
    AVChannelLayout layout;
    input_layout(frame, &layout);
    if (!swr_ || frame.format != in_format_ || frame.sample_rate != in_rate_ ||
        av_channel_layout_compare(&layout, &in_layout_) != 0) {
      if (swr_) flush(out);
      open(frame, layout);
    }
    av_channel_layout_uninit(&layout);
    convert(frame.extended_data, frame.nb_samples, out);
  }

  // Drains the samples the resampler's filter still holds back; call once after the last frame.
  void flush(std::vector<int16_t>& out) {  // out: [n_samples]
    if (!swr_) return;
    convert(nullptr, 0, out);
    swr_.reset();
  }

  ~MonoResampler() { av_channel_layout_uninit(&in_layout_); }

 private:
  // Decoders may leave the layout unspecified (only a channel count); swr cannot downmix an unordered
  // layout, so use FFmpeg's default layout for that many channels, as the ffmpeg tool does.
  static void input_layout(const AVFrame& frame, AVChannelLayout* layout) {
    if (frame.ch_layout.order != AV_CHANNEL_ORDER_UNSPEC && av_channel_layout_check(&frame.ch_layout)) {
      av_channel_layout_copy(layout, &frame.ch_layout);
    } else {
      av_channel_layout_default(layout, frame.ch_layout.nb_channels > 0 ? frame.ch_layout.nb_channels : 1);
    }
  }

  void open(const AVFrame& frame, AVChannelLayout& layout) {  // FFmpeg 5 takes layouts by non-const pointer
    if (frame.sample_rate <= 0 || layout.nb_channels <= 0) {
      throw AudioError("audio file '" + path_ + "' has an invalid sample rate or channel count");
    }
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
    SwrContext* raw = nullptr;
    int err = swr_alloc_set_opts2(&raw, &mono, AV_SAMPLE_FMT_S16, kSampleRate, &layout,
                                  static_cast<AVSampleFormat>(frame.format), frame.sample_rate, 0, nullptr);
    swr_.reset(raw);
    // swr's default for 8/16-bit input is to resample in int16. The FFmpeg that faster-whisper's PyAV bundles
    // (8.x) resamples such input in float instead, while the system FFmpeg (5.x) still picks int16: pin float
    // so we produce the reference's samples (measured: bit-identical on all the eval clips, where int16
    // differs by up to 2 LSB). Without a rate change no resampling happens and int16 is what both use.
    if (err >= 0 && av_get_bytes_per_sample(static_cast<AVSampleFormat>(frame.format)) <= 2 &&
        frame.sample_rate != kSampleRate) {
      err = av_opt_set_sample_fmt(swr_.get(), "internal_sample_fmt", AV_SAMPLE_FMT_FLTP, 0);
    }
    if (err >= 0) err = swr_init(swr_.get());
    if (err < 0) {
      swr_.reset();
      throw AudioError("cannot convert audio of '" + path_ + "' to 16 kHz mono: " + av_error_text(err));
    }
    in_format_ = frame.format;
    in_rate_ = frame.sample_rate;
    av_channel_layout_uninit(&in_layout_);
    av_channel_layout_copy(&in_layout_, &layout);
  }

  // input: nullptr with n_in = 0 drains the resampler.
  void convert(uint8_t** input, int n_in, std::vector<int16_t>& out) {
    while (true) {
      const int capacity = swr_get_out_samples(swr_.get(), n_in);
      if (capacity < 0) {
        throw AudioError("cannot resample audio of '" + path_ + "': " + av_error_text(capacity));
      }
      const size_t old_size = out.size();
      out.resize(old_size + static_cast<size_t>(capacity) + 1);
      uint8_t* dst = reinterpret_cast<uint8_t*>(out.data() + old_size);
      const int n_out = swr_convert(swr_.get(), &dst, capacity + 1, const_cast<const uint8_t**>(input), n_in);
      if (n_out < 0) {
        out.resize(old_size);
        throw AudioError("cannot resample audio of '" + path_ + "': " + av_error_text(n_out));
      }
      out.resize(old_size + static_cast<size_t>(n_out));
      // When feeding input, swr takes all of it in one call (buffering what does not fit); when draining,
      // keep going until it has nothing left.
      if (input != nullptr || n_out == 0) return;
    }
  }

  std::string path_;
  std::unique_ptr<SwrContext, SwrFreer> swr_;
  int in_format_ = -1;
  int in_rate_ = 0;
  AVChannelLayout in_layout_{};
};

}  // namespace

std::vector<float> load_audio(const std::string& path) {
  silence_ffmpeg_log();
  check_readable(path);

  AVFormatContext* raw_fmt = nullptr;
  int err = avformat_open_input(&raw_fmt, path.c_str(), nullptr, nullptr);
  if (err < 0) {
    // On failure FFmpeg frees the context itself.
    if (err == AVERROR(ENOENT) || err == AVERROR(EACCES) || err == AVERROR(EISDIR)) {
      throw IoError("cannot open audio file '" + path + "': " + av_error_text(err));
    }
    throw AudioError("'" + path + "' is not a readable audio file: " + av_error_text(err));
  }
  std::unique_ptr<AVFormatContext, FormatCloser> fmt(raw_fmt);
  // Probing fills in codec parameters for headerless formats (raw mp3, adts aac); a failure here is not
  // fatal by itself, the stream search below decides.
  avformat_find_stream_info(fmt.get(), nullptr);

  const AVCodec* decoder = nullptr;
  const int stream_index = av_find_best_stream(fmt.get(), AVMEDIA_TYPE_AUDIO, -1, -1, &decoder, 0);
  if (stream_index == AVERROR_DECODER_NOT_FOUND) {
    throw AudioError("no decoder for the audio stream of '" + path + "'");
  }
  if (stream_index < 0 || decoder == nullptr) {
    throw AudioError("'" + path + "' has no audio stream");
  }
  AVStream* stream = fmt->streams[stream_index];

  std::unique_ptr<AVCodecContext, CodecFreer> codec(avcodec_alloc_context3(decoder));
  if (!codec) throw AudioError("cannot allocate a decoder for '" + path + "'");
  err = avcodec_parameters_to_context(codec.get(), stream->codecpar);
  if (err >= 0) {
    codec->pkt_timebase = stream->time_base;
    err = avcodec_open2(codec.get(), decoder, nullptr);
  }
  if (err < 0) {
    throw AudioError("cannot open the " + std::string(decoder->name) + " decoder for '" + path +
                     "': " + av_error_text(err));
  }

  std::unique_ptr<AVPacket, PacketFreer> packet(av_packet_alloc());
  std::unique_ptr<AVFrame, FrameFreer> frame(av_frame_alloc());
  if (!packet || !frame) throw AudioError("out of memory decoding '" + path + "'");

  MonoResampler resampler(path);
  std::vector<int16_t> pcm;  // [n_samples] 16 kHz mono
  // Decode and read errors skip the packet (or end the stream) instead of failing the file, as the ffmpeg
  // tool does: one corrupt packet in a long recording, or a truncated download, should not cost the whole
  // transcript. Only a file that yields no audio at all is an error, reported with the last failure.
  int last_error = 0;
  auto note_error = [&](int r) {
    if (r == AVERROR(ENOMEM)) throw AudioError("out of memory decoding '" + path + "'");
    last_error = r;
  };

  auto drain_decoder = [&]() {
    while (true) {
      const int r = avcodec_receive_frame(codec.get(), frame.get());
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return;
      if (r < 0) {
        note_error(r);
        return;
      }
      resampler.push(*frame, pcm);
      av_frame_unref(frame.get());
    }
  };

  while (true) {
    err = av_read_frame(fmt.get(), packet.get());
    if (err < 0) {
      if (err != AVERROR_EOF) note_error(err);
      break;
    }
    if (packet->stream_index == stream_index) {
      int r = avcodec_send_packet(codec.get(), packet.get());
      if (r == AVERROR(EAGAIN)) {
        // Only happens if the decoder still holds output; take it and offer the packet again.
        drain_decoder();
        r = avcodec_send_packet(codec.get(), packet.get());
      }
      if (r < 0) note_error(r);
      drain_decoder();
    }
    av_packet_unref(packet.get());
  }
  // Flush the decoder (codecs with delay hold frames back) and then the resampler.
  if (avcodec_send_packet(codec.get(), nullptr) >= 0) drain_decoder();
  resampler.flush(pcm);

  if (pcm.empty()) {
    if (last_error < 0) throw AudioError("cannot decode audio of '" + path + "': " + av_error_text(last_error));
    throw AudioError("audio file '" + path + "' contains no audio samples");
  }

  std::vector<float> samples(pcm.size());  // [n_samples]
  for (size_t i = 0; i < pcm.size(); ++i) samples[i] = static_cast<float>(pcm[i]) / 32768.0f;
  return samples;
}

}  // namespace wisp
