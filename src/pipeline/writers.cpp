#include "pipeline/writers.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "wisp/errors.h"

namespace wisp::pipeline {
namespace {

size_t utf8_length(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// Code point of the UTF-8 character spanning s[begin, end), or -1 when it is not a well-formed one.
int32_t code_point(std::string_view s, size_t begin, size_t end) {
  auto b0 = static_cast<unsigned char>(s[begin]);
  size_t len = end - begin;
  if (len == 1) return b0 < 0x80 ? b0 : -1;
  if (utf8_length(b0) != len) return -1;
  int32_t cp = len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (size_t i = begin + 1; i < end; ++i) {
    auto b = static_cast<unsigned char>(s[i]);
    if ((b & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (b & 0x3F);
  }
  return cp;
}

// Python's str.isspace(), which str.strip() uses: wider than ASCII whitespace (NBSP, ideographic space,
// the information separators 0x1C..0x1F, ...), so strip() agrees with the reference on any text.
bool is_python_space(int32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string strip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    size_t len = std::min(utf8_length(static_cast<unsigned char>(s[begin])), s.size() - begin);
    if (!is_python_space(code_point(s, begin, begin + len))) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;
    // Step back over continuation bytes to the start of the last character (at most 3 of them).
    while (start > begin && end - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    if (utf8_length(static_cast<unsigned char>(s[start])) != end - start) start = end - 1;
    if (!is_python_space(code_point(s, start, end))) break;
    end = start;
  }
  return std::string(s.substr(begin, end - begin));
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t hit = s.find(from); hit != std::string_view::npos; hit = s.find(from, pos)) {
    out.append(s.substr(pos, hit - pos)).append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

// Python's round(): halves go to the even neighbour, which nearbyint does in the default rounding mode.
long long round_half_even(double x) { return static_cast<long long>(std::nearbyint(x)); }

// The reference's format_timestamp: hours only when asked or when non-zero.
std::string format_timestamp(double seconds, bool always_include_hours, char decimal_marker) {
  if (!(seconds >= 0.0)) throw InvalidArgument("negative or NaN timestamp " + std::to_string(seconds));
  long long ms = round_half_even(seconds * 1000.0);
  long long hours = ms / 3'600'000;
  ms -= hours * 3'600'000;
  long long minutes = ms / 60'000;
  ms -= minutes * 60'000;
  long long secs = ms / 1'000;
  ms -= secs * 1'000;
  char buf[64];
  if (always_include_hours || hours > 0) {
    std::snprintf(buf, sizeof(buf), "%02lld:%02lld:%02lld%c%03lld", hours, minutes, secs, decimal_marker, ms);
  } else {
    std::snprintf(buf, sizeof(buf), "%02lld:%02lld%c%03lld", minutes, secs, decimal_marker, ms);
  }
  return buf;
}

// Subtitle cue text as the reference writes it: stripped, and "-->" defused so it cannot end the cue line.
std::string cue_text(const Segment& s) { return replace_all(strip(s.text), "-->", "->"); }

std::string render_txt(const Transcript& t) {
  std::string out;
  for (const Segment& s : t.segments) out += strip(s.text) + "\n";
  return out;
}

bool has_words(const Transcript& t) {
  return std::any_of(t.segments.begin(), t.segments.end(), [](const Segment& s) { return !s.words.empty(); });
}

// Python's len() of a UTF-8 string: code points.
int64_t py_len(std::string_view s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool is_python_space_at(std::string_view s, size_t i, size_t* len) {
  *len = std::min(utf8_length(static_cast<unsigned char>(s[i])), s.size() - i);
  return is_python_space(code_point(s, i, i + *len));
}

// re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", word): the word after its leading whitespace is underlined. `.` stops
// at a newline and `$` also matches before a final one, so a word with a newline past its leading space is
// left as it is (unless that newline ends it).
std::string underline(std::string_view word) {
  size_t lead = 0, len = 0;
  while (lead < word.size() && is_python_space_at(word, lead, &len)) lead += len;
  std::string_view rest = word.substr(lead);
  std::string_view tail;
  const size_t nl = rest.find('\n');
  if (nl != std::string_view::npos) {
    if (nl + 1 != rest.size()) return std::string(word);
    tail = rest.substr(nl);
    rest = rest.substr(0, nl);
  }
  std::string out(word.substr(0, lead));
  out.append("<u>").append(rest).append("</u>").append(tail);
  return out;
}

struct Cue {
  std::string start, end, text;
};

struct TimedWord {
  double start, end;
  std::string word;
};

// openai-whisper's SubtitlesWriter.iterate_result: cues of segments, or (with word timestamps) of words
// regrouped by the line options, each word underlined in turn with highlight_words.
std::vector<Cue> subtitle_cues(const Transcript& t, const WriterOptions& o, bool always_include_hours,
                               char decimal_marker) {
  auto ts = [&](double seconds) { return format_timestamp(seconds, always_include_hours, decimal_marker); };
  std::vector<Cue> cues;
  if (t.segments.empty() || !has_words(t)) {
    for (const Segment& s : t.segments) cues.push_back({ts(s.start), ts(s.end), cue_text(s)});
    return cues;
  }

  const bool preserve_segments = o.max_line_count <= 0 || o.max_line_width <= 0;
  const int64_t max_line_width = o.max_line_width > 0 ? o.max_line_width : 1000;
  const size_t max_words_per_line = o.max_words_per_line > 0 ? static_cast<size_t>(o.max_words_per_line) : 1000;
  const bool line_count_set = o.max_line_count > 0;

  std::vector<std::vector<TimedWord>> subtitles;
  {
    int64_t line_len = 0;
    int line_count = 1;
    std::vector<TimedWord> subtitle;
    double last = t.segments.front().start;  // get_start(): the first word's start, else the first segment's
    for (const Segment& s : t.segments) {
      if (!s.words.empty()) {
        last = s.words.front().start;
        break;
      }
    }
    for (const Segment& segment : t.segments) {
      const size_t n = segment.words.size();
      size_t words_count = max_words_per_line;
      for (size_t chunk = 0; chunk < n; chunk += max_words_per_line) {
        if (max_words_per_line > n - chunk) words_count = n - chunk;
        for (size_t i = 0; i < words_count && chunk + i < n; ++i) {
          const Word& w = segment.words[chunk + i];
          TimedWord timing{w.start, w.end, w.word};
          const bool long_pause = !preserve_segments && timing.start - last > 3.0;
          const bool has_room = line_len + py_len(timing.word) <= max_line_width;
          const bool seg_break = i == 0 && !subtitle.empty() && preserve_segments;
          if (line_len > 0 && has_room && !long_pause && !seg_break) {
            line_len += py_len(timing.word);  // line continuation
          } else {
            timing.word = strip(timing.word);  // new line
            if ((!subtitle.empty() && line_count_set && (long_pause || line_count >= o.max_line_count)) || seg_break) {
              subtitles.push_back(std::move(subtitle));  // subtitle break
              subtitle.clear();
              line_count = 1;
            } else if (line_len > 0) {
              ++line_count;  // line break
              timing.word = "\n" + timing.word;
            }
            line_len = py_len(strip(timing.word));
          }
          last = timing.start;
          subtitle.push_back(std::move(timing));
        }
      }
    }
    if (!subtitle.empty()) subtitles.push_back(std::move(subtitle));
  }

  for (const auto& subtitle : subtitles) {
    const std::string start = ts(subtitle.front().start);
    const std::string end = ts(subtitle.back().end);
    std::string text;
    for (const TimedWord& w : subtitle) text += w.word;
    if (!o.highlight_words) {
      cues.push_back({start, end, text});
      continue;
    }
    std::string last = start;
    for (size_t i = 0; i < subtitle.size(); ++i) {
      const std::string ws = ts(subtitle[i].start);
      const std::string we = ts(subtitle[i].end);
      if (last != ws) cues.push_back({last, ws, text});
      std::string marked;
      for (size_t j = 0; j < subtitle.size(); ++j) marked += j == i ? underline(subtitle[j].word) : subtitle[j].word;
      cues.push_back({ws, we, std::move(marked)});
      last = we;
    }
  }
  return cues;
}

std::string render_vtt(const Transcript& t, const WriterOptions& o) {
  std::string out = "WEBVTT\n\n";
  for (const Cue& c : subtitle_cues(t, o, false, '.')) out += c.start + " --> " + c.end + "\n" + c.text + "\n\n";
  return out;
}

std::string render_srt(const Transcript& t, const WriterOptions& o) {
  std::string out;
  int index = 1;
  for (const Cue& c : subtitle_cues(t, o, true, ',')) {
    out += std::to_string(index++) + "\n";
    out += c.start + " --> " + c.end + "\n" + c.text + "\n\n";
  }
  return out;
}

std::string render_tsv(const Transcript& t) {
  std::string out = "start\tend\ttext\n";
  for (const Segment& s : t.segments) {
    out += std::to_string(round_half_even(1000.0 * s.start)) + "\t" + std::to_string(round_half_even(1000.0 * s.end)) +
           "\t" + replace_all(strip(s.text), "\t", " ") + "\n";
  }
  return out;
}

std::string render_json(const Transcript& t) {
  // ordered_json keeps the keys in the reference's order instead of sorting them.
  const bool words = has_words(t);
  nlohmann::ordered_json segments = nlohmann::ordered_json::array();
  for (const Segment& s : t.segments) {
    segments.push_back({
        {"id", s.id},
        {"seek", s.seek},
        {"start", s.start},
        {"end", s.end},
        {"text", s.text},
        {"tokens", s.tokens},
        {"temperature", s.temperature},
        {"avg_logprob", s.avg_logprob},
        {"compression_ratio", s.compression_ratio},
        {"no_speech_prob", s.no_speech_prob},
    });
    if (words) {  // with word timestamps every segment has the list, as the reference's result does
      nlohmann::ordered_json list = nlohmann::ordered_json::array();
      for (const Word& w : s.words) {
        list.push_back({{"word", w.word}, {"start", w.start}, {"end", w.end}, {"probability", w.probability}});
      }
      segments.back()["words"] = std::move(list);
    }
  }
  nlohmann::ordered_json doc = {
      {"text", t.text()},
      {"language", t.language},
      {"duration", t.duration},
      {"segments", std::move(segments)},
  };
  // UTF-8 is kept as is (not \u-escaped); a stray invalid byte becomes U+FFFD instead of an exception.
  return doc.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string errno_text(int err) { return std::strerror(err); }

}  // namespace

const std::vector<std::string>& output_formats() {
  static const std::vector<std::string> formats = {"txt", "vtt", "srt", "tsv", "json"};
  return formats;
}

std::string render(const Transcript& t, const std::string& format) {
  return pipeline::render(t, format, WriterOptions{});
}

std::string render(const Transcript& t, const std::string& format, const WriterOptions& options) {
  if (format == "txt") return render_txt(t);
  if (format == "vtt") return render_vtt(t, options);
  if (format == "srt") return render_srt(t, options);
  if (format == "tsv") return render_tsv(t);
  if (format == "json") return render_json(t);
  throw InvalidArgument("unknown output format \"" + format + "\" (expected txt, vtt, srt, tsv or json)");
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  namespace fs = std::filesystem;
  fs::path target(path);
  if (target.filename().empty()) throw IoError("cannot write " + path + ": not a file name");
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";

  // The temporary sits beside the target so the final rename stays within one file system and is atomic.
  // open() with mode 0666 lets the umask give it the same permissions any new output file would get.
  static std::atomic<unsigned> counter{0};
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    // Built by appends: GCC 12 at -O3 warns falsely (-Wrestrict) on a chain of string operator+.
    std::string name = ".";
    name.append(target.filename().string()).append(".tmp-").append(std::to_string(::getpid()));
    name.append("-").append(std::to_string(counter++));
    tmp = (dir / name).string();
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) throw IoError("cannot write " + path + ": " + errno_text(errno));

  auto fail = [&](const std::string& what, int err) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw IoError("cannot write " + path + ": " + what + ": " + errno_text(err));
  };
  const char* p = contents.data();
  size_t left = contents.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write", errno);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  // Flush before the rename, or a crash could leave the new name pointing at an empty file.
  if (::fsync(fd) != 0) fail("fsync", errno);
  int rc = ::close(fd);
  fd = -1;
  if (rc != 0) fail("close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename", errno);
}

}  // namespace wisp::pipeline
