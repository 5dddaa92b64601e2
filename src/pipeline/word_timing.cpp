#include "pipeline/word_timing.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "text/unicode.h"
#include "wisp/errors.h"

namespace wisp::pipeline {

namespace {

namespace u = text::detail;

constexpr double kTokensPerSecond = 50.0;   // encoder positions per second (16000 / (160 · 2))
constexpr double kFramesPerSecond = 100.0;  // mel frames per second
constexpr const char* kPythonPunctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";  // string.punctuation
constexpr const char* kSentenceEndMarks = ".\u3002!\uff01?\uff1f";
// generate_segments' `punctuation`, used by is_segment_anomaly.
constexpr const char* kAnomalyPunctuation = "\"'\u201c\u00bf([{-\"'.\u3002,\uff0c!\uff01?\uff1f:\uff1a\u201d)]}\u3001";

// Python's `a in b` for strings: a substring test (true for an empty a). On valid UTF-8 a byte-level
// search finds exactly the code-point substrings.
bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// Python's str.strip() (Unicode whitespace).
std::string py_strip(const std::string& s) {
  const std::u32string c = u::utf8_to_u32(s);
  size_t b = 0, e = c.size();
  while (b < e && u::is_space(c[b])) ++b;
  while (e > b && u::is_space(c[e - 1])) --e;
  return u::u32_to_utf8(std::u32string_view(c).substr(b, e - b));
}

bool starts_with_space(const std::string& s) { return !s.empty() && s.front() == ' '; }
bool ends_with_space(const std::string& s) { return !s.empty() && s.back() == ' '; }

// numpy's round(x, 2) on a float64: rint(x · 100) / 100.
double round2(double x) { return std::nearbyint(x * 100.0) / 100.0; }

// numpy.median.
double median(std::vector<double> v) {
  const size_t n = v.size();
  std::sort(v.begin(), v.end());
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

}  // namespace

std::string sot_language(const tokenizer::Tokenizer& tok, std::span<const int> sot_sequence) {
  if (sot_sequence.size() >= 2) {
    const std::string code = tok.language_code(sot_sequence[1]);
    if (!code.empty()) return code;
  }
  return "en";
}

// ---- word splitting ----

std::pair<std::vector<std::string>, std::vector<std::vector<int>>> split_tokens_on_unicode(
    const tokenizer::Tokenizer& tok, std::span<const int> tokens) {
  // decode() skips special tokens, as the reference's decode_with_timestamps does for everything but
  // timestamps (which never reach here). Indices below are in code points, like Python's str.
  const std::u32string full = u::utf8_to_u32(tok.decode(tokens));
  std::vector<std::string> words;
  std::vector<std::vector<int>> word_tokens;
  std::vector<int> current;
  size_t offset = 0;
  for (int t : tokens) {
    current.push_back(t);
    const std::string decoded = tok.decode(current);
    const std::u32string cps = u::utf8_to_u32(decoded);
    const size_t hit = cps.find(U'\uFFFD');
    const bool complete =
        hit == std::u32string::npos || (hit + offset < full.size() && full[hit + offset] == U'\uFFFD');
    if (complete) {
      words.push_back(decoded);
      word_tokens.push_back(std::move(current));
      current.clear();
      offset += cps.size();
    }
  }
  return {std::move(words), std::move(word_tokens)};
}

std::pair<std::vector<std::string>, std::vector<std::vector<int>>> split_tokens_on_spaces(
    const tokenizer::Tokenizer& tok, std::span<const int> tokens) {
  auto [subwords, subword_tokens] = split_tokens_on_unicode(tok, tokens);
  std::vector<std::string> words;
  std::vector<std::vector<int>> word_tokens;
  for (size_t i = 0; i < subwords.size(); ++i) {
    const bool special = subword_tokens[i].front() >= tok.special().eot;
    const bool with_space = starts_with_space(subwords[i]);
    const bool punctuation = contains(kPythonPunctuation, py_strip(subwords[i]));
    if (special || with_space || punctuation || words.empty()) {
      words.push_back(subwords[i]);
      word_tokens.push_back(subword_tokens[i]);
    } else {
      words.back() += subwords[i];
      word_tokens.back().insert(word_tokens.back().end(), subword_tokens[i].begin(), subword_tokens[i].end());
    }
  }
  return {std::move(words), std::move(word_tokens)};
}

std::pair<std::vector<std::string>, std::vector<std::vector<int>>> split_to_word_tokens(const tokenizer::Tokenizer& tok,
                                                                                        std::span<const int> tokens,
                                                                                        const std::string& language) {
  // These languages don't put spaces between words: split wherever the text so far is complete characters.
  static const char* const kNoSpaces[] = {"zh", "ja", "th", "lo", "my", "yue"};
  for (const char* l : kNoSpaces) {
    if (language == l) return split_tokens_on_unicode(tok, tokens);
  }
  return split_tokens_on_spaces(tok, tokens);
}

void merge_punctuations(std::vector<WordTiming>& alignment, const std::string& prepended, const std::string& appended) {
  if (alignment.size() >= 2) {
    // Prepended punctuation joins the following word (scanning right to left).
    size_t j = alignment.size() - 1;
    for (size_t i = alignment.size() - 1; i-- > 0;) {
      WordTiming& previous = alignment[i];
      WordTiming& following = alignment[j];
      if (starts_with_space(previous.word) && contains(prepended, py_strip(previous.word))) {
        following.word = previous.word + following.word;
        std::vector<int> tokens = previous.tokens;
        tokens.insert(tokens.end(), following.tokens.begin(), following.tokens.end());
        following.tokens = std::move(tokens);
        previous.word.clear();
        previous.tokens.clear();
      } else {
        j = i;
      }
    }
  }
  // Appended punctuation joins the previous word (scanning left to right).
  size_t i = 0;
  for (size_t j = 1; j < alignment.size(); ++j) {
    WordTiming& previous = alignment[i];
    WordTiming& following = alignment[j];
    if (!ends_with_space(previous.word) && contains(appended, following.word)) {
      previous.word += following.word;
      previous.tokens.insert(previous.tokens.end(), following.tokens.begin(), following.tokens.end());
      following.word.clear();
      following.tokens.clear();
    } else {
      i = j;
    }
  }
}

// ---- alignment ----

std::vector<float> median_filter(std::span<const float> x, int64_t rows, int64_t cols, int width) {
  std::vector<float> out(x.begin(), x.end());
  const int64_t rank = width / 2;
  if (cols <= rank || width <= 1) return out;
  std::vector<float> window(static_cast<size_t>(width));
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x.data() + r * cols;
    float* o = out.data() + r * cols;
    for (int64_t j = 0; j < cols; ++j) {
      for (int64_t k = -rank; k <= rank; ++k) {
        int64_t read = std::abs(j + k);
        if (read >= cols) read = cols - (read - cols) - 2;  // reflect: ... c-2, c-1, c-2, ...
        window[static_cast<size_t>(k + rank)] = in[read];
      }
      std::nth_element(window.begin(), window.begin() + rank, window.end());
      o[j] = window[static_cast<size_t>(rank)];
    }
  }
  return out;
}

std::vector<std::pair<int, int>> negative_dtw(std::span<const float> x, int64_t n, int64_t m) {
  constexpr float inf = std::numeric_limits<float>::infinity();
  const int64_t w = m + 1;
  std::vector<float> cost(static_cast<size_t>((n + 1) * w), inf);
  std::vector<signed char> trace(static_cast<size_t>((n + 1) * w), -1);
  cost[0] = 0.0f;
  for (int64_t j = 1; j <= m; ++j) {
    for (int64_t i = 1; i <= n; ++i) {
      const float c0 = cost[(i - 1) * w + j - 1];
      const float c1 = cost[(i - 1) * w + j];
      const float c2 = cost[i * w + j - 1];
      float c;
      signed char t;
      if (c0 < c1 && c0 < c2) {
        c = c0, t = 0;
      } else if (c1 < c0 && c1 < c2) {
        c = c1, t = 1;
      } else {
        c = c2, t = 2;
      }
      cost[i * w + j] = -x[static_cast<size_t>((i - 1) * m + (j - 1))] + c;
      trace[i * w + j] = t;
    }
  }
  for (int64_t k = 0; k <= m; ++k) trace[k] = 2;
  for (int64_t k = 0; k <= n; ++k) trace[k * w] = 1;

  std::vector<std::pair<int, int>> path;
  int64_t i = n, j = m;
  while (i > 0 || j > 0) {
    path.emplace_back(static_cast<int>(i - 1), static_cast<int>(j - 1));
    const signed char t = trace[i * w + j];
    if (t == 0) {
      --i, --j;
    } else if (t == 1) {
      --i;
    } else {
      --j;
    }
  }
  std::reverse(path.begin(), path.end());
  return path;
}

AlignmentMatrix alignment_matrix(const model::WhisperModel& model, const model::CrossKV& cross,
                                 const tokenizer::Tokenizer& tok, std::span<const int> sot_sequence,
                                 std::span<const int> text_tokens, int num_frames, int median_filter_width) {
  const auto& heads = model.metadata().alignment_heads;
  if (heads.empty()) {
    throw ModelError("'" + model.path() + "' lists no alignment heads: word timestamps need them");
  }
  const auto& sp = tok.special();
  std::vector<int> tokens(sot_sequence.begin(), sot_sequence.end());
  tokens.push_back(sp.no_timestamps);
  tokens.insert(tokens.end(), text_tokens.begin(), text_tokens.end());
  tokens.push_back(sp.eot);
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t offset = static_cast<int64_t>(sot_sequence.size());
  const int64_t n_text = static_cast<int64_t>(text_tokens.size());

  const model::CrossAttention pass = model.cross_attention_weights(tokens, cross, heads);

  AlignmentMatrix out;
  // P(text token t | everything before it), a softmax over the ordinary tokens [0, eot).
  if (n_text > 0) {
    const core::Tensor logits = model.logits(pass.hidden.rows(offset, offset + n_text));  // [n_text, vocab]
    const int64_t vocab = logits.dim(1);
    for (int64_t t = 0; t < n_text; ++t) {
      const float* row = logits.data<float>() + t * vocab;
      const float mx = *std::max_element(row, row + sp.eot);
      double sum = 0.0;
      for (int v = 0; v < sp.eot; ++v) sum += std::exp(static_cast<double>(row[v] - mx));
      const int target = text_tokens[static_cast<size_t>(t)];
      out.text_token_probs.push_back(target < sp.eot ? std::exp(static_cast<double>(row[target] - mx)) / sum : 0.0);
    }
  }

  // Content frames only: the second convolution halves the mel frames.
  const int64_t n_audio = pass.scores.empty() ? 0 : pass.scores.front().dim(1);
  const int64_t frames = std::min<int64_t>(num_frames / 2, n_audio);
  out.rows = n_text + 1;
  out.cols = std::max<int64_t>(frames, 0);
  out.matrix.assign(static_cast<size_t>(out.rows * out.cols), 0.0f);
  if (frames <= 0) return out;

  std::vector<double> mean(static_cast<size_t>(n * frames), 0.0);
  std::vector<float> w(static_cast<size_t>(n * frames));
  for (const core::Tensor& s : pass.scores) {
    // softmax over the content frames of each token's row
    for (int64_t r = 0; r < n; ++r) {
      const float* in = s.data<float>() + r * n_audio;
      float* o = w.data() + r * frames;
      const float mx = *std::max_element(in, in + frames);
      float sum = 0.0f;
      for (int64_t c = 0; c < frames; ++c) sum += (o[c] = std::exp(in[c] - mx));
      for (int64_t c = 0; c < frames; ++c) o[c] /= sum;
    }
    // standardise each frame over the tokens (population variance, no epsilon)
    for (int64_t c = 0; c < frames; ++c) {
      float sum = 0.0f, sum_sq = 0.0f;
      for (int64_t r = 0; r < n; ++r) {
        const float v = w[r * frames + c];
        sum += v;
        sum_sq += v * v;
      }
      const float mu = sum / static_cast<float>(n);
      const float var = std::max(sum_sq / static_cast<float>(n) - mu * mu, 0.0f);
      const float rstd = var > 0.0f ? 1.0f / std::sqrt(var) : 0.0f;
      for (int64_t r = 0; r < n; ++r) w[r * frames + c] = (w[r * frames + c] - mu) * rstd;
    }
    const std::vector<float> f = median_filter(w, n, frames, median_filter_width);
    for (size_t k = 0; k < f.size(); ++k) mean[k] += f[k];
  }
  // Mean over the heads of the rows [<|notimestamps|>, text tokens] (the SOT rows and <|endoftext|> drop out).
  const double inv = 1.0 / static_cast<double>(pass.scores.size());
  for (int64_t r = 0; r < out.rows; ++r) {
    for (int64_t c = 0; c < frames; ++c) {
      out.matrix[static_cast<size_t>(r * frames + c)] = static_cast<float>(mean[(offset + r) * frames + c] * inv);
    }
  }
  return out;
}

std::vector<WordTiming> find_alignment(const model::WhisperModel& model, const model::CrossKV& cross,
                                       const tokenizer::Tokenizer& tok, std::span<const int> sot_sequence,
                                       std::span<const int> text_tokens, int num_frames, const std::string& language,
                                       int median_filter_width) {
  if (text_tokens.empty()) return {};
  const AlignmentMatrix a =
      alignment_matrix(model, cross, tok, sot_sequence, text_tokens, num_frames, median_filter_width);
  if (a.cols == 0) return {};
  const auto path = negative_dtw(a.matrix, a.rows, a.cols);

  // The time at which the path enters each row: the start of that token.
  std::vector<double> jump_times;
  for (size_t k = 0; k < path.size(); ++k) {
    if (k == 0 || path[k].first != path[k - 1].first) jump_times.push_back(path[k].second / kTokensPerSecond);
  }

  std::vector<int> with_eot(text_tokens.begin(), text_tokens.end());
  with_eot.push_back(tok.special().eot);
  const auto [words, word_tokens] = split_to_word_tokens(tok, with_eot, language);
  if (word_tokens.size() <= 1) return {};

  // word_boundaries: the index of each word's first token (the last word, <|endoftext|>, is dropped).
  std::vector<size_t> boundaries = {0};
  for (size_t k = 0; k + 1 < word_tokens.size(); ++k) boundaries.push_back(boundaries.back() + word_tokens[k].size());

  std::vector<WordTiming> out;
  for (size_t k = 0; k + 1 < boundaries.size(); ++k) {
    const size_t b = boundaries[k], e = boundaries[k + 1];
    WordTiming wt;
    wt.word = words[k];
    wt.tokens = word_tokens[k];
    wt.start = jump_times.at(b);
    wt.end = jump_times.at(e);
    double sum = 0.0;
    for (size_t t = b; t < e; ++t) sum += a.text_token_probs.at(t);
    wt.probability = e > b ? sum / static_cast<double>(e - b) : std::nan("");
    out.push_back(std::move(wt));
  }
  return out;
}

// ---- per window ----

void align_words(std::vector<WindowSegment>& segments, const model::WhisperModel& model, const model::CrossKV& cross,
                 const tokenizer::Tokenizer& tok, std::span<const int> sot_sequence, int seek, int num_frames,
                 double last_speech_timestamp, const WordTimingOptions& options) {
  if (segments.empty()) return;
  const int eot = tok.special().eot;
  std::vector<int> text_tokens;
  std::vector<size_t> segment_text_tokens;  // text tokens per segment
  for (const WindowSegment& s : segments) {
    size_t count = 0;
    for (int t : s.tokens) {
      if (t < eot) {
        text_tokens.push_back(t);
        ++count;
      }
    }
    segment_text_tokens.push_back(count);
  }

  std::vector<WordTiming> alignment = find_alignment(model, cross, tok, sot_sequence, text_tokens, num_frames,
                                                     sot_language(tok, sot_sequence), options.median_filter_width);

  std::vector<double> durations;
  for (const WordTiming& w : alignment) {
    if (w.end - w.start != 0.0) durations.push_back(w.end - w.start);
  }
  const double median_duration = std::min(0.7, durations.empty() ? 0.0 : median(durations));
  const double max_duration = median_duration * 2;

  // Truncate long words at sentence boundaries (the reference's stand-in for a VAD-based segmentation).
  if (!durations.empty()) {
    for (size_t i = 1; i < alignment.size(); ++i) {
      if (alignment[i].end - alignment[i].start > max_duration) {
        if (contains(kSentenceEndMarks, alignment[i].word)) {
          alignment[i].end = alignment[i].start + max_duration;
        } else if (contains(kSentenceEndMarks, alignment[i - 1].word)) {
          alignment[i].start = alignment[i].end - max_duration;
        }
      }
    }
  }
  merge_punctuations(alignment, options.prepend_punctuations, options.append_punctuations);

  const double time_offset = seek / kFramesPerSecond;
  size_t word_index = 0;
  for (size_t si = 0; si < segments.size(); ++si) {
    WindowSegment& segment = segments[si];
    size_t saved_tokens = 0;
    std::vector<Word> words;
    while (word_index < alignment.size() && saved_tokens < segment_text_tokens[si]) {
      const WordTiming& timing = alignment[word_index];
      if (!timing.word.empty()) {
        words.push_back(
            {round2(time_offset + timing.start), round2(time_offset + timing.end), timing.word, timing.probability});
      }
      saved_tokens += timing.tokens.size();
      ++word_index;
    }

    if (!words.empty()) {
      // The first and second word after a pause are at most twice the median word duration.
      if (words[0].end - last_speech_timestamp > median_duration * 4 &&
          (words[0].end - words[0].start > max_duration ||
           (words.size() > 1 && words[1].end - words[0].start > max_duration * 2))) {
        if (words.size() > 1 && words[1].end - words[1].start > max_duration) {
          const double boundary = std::max(words[1].end / 2, words[1].end - max_duration);
          words[0].end = words[1].start = boundary;
        }
        words[0].start = std::max(0.0, words[0].end - max_duration);
      }
      // Prefer the segment-level start timestamp if the first word is too long.
      if (segment.start < words[0].end && segment.start - 0.5 > words[0].start) {
        words[0].start = std::max(0.0, std::min(words[0].end - median_duration, segment.start));
      } else {
        segment.start = words[0].start;
      }
      // Prefer the segment-level end timestamp if the last word is too long.
      if (segment.end > words.back().start && segment.end + 0.5 < words.back().end) {
        words.back().end = std::max(words.back().start + median_duration, segment.end);
      } else {
        segment.end = words.back().end;
      }
      last_speech_timestamp = segment.end;
    }
    segment.words = std::move(words);
  }
}

std::optional<double> last_word_end(std::span<const WindowSegment> segments) {
  for (auto s = segments.rbegin(); s != segments.rend(); ++s) {
    if (!s->words.empty()) return s->words.back().end;
  }
  if (segments.empty()) return std::nullopt;
  return segments.back().end;
}

double word_anomaly_score(const Word& word) {
  const double duration = word.end - word.start;
  double score = 0.0;
  if (word.probability < 0.15) score += 1.0;
  if (duration < 0.133) score += (0.133 - duration) * 15;
  if (duration > 2.0) score += duration - 2.0;
  return score;
}

bool is_segment_anomaly(std::span<const Word> words) {
  if (words.empty()) return false;
  double score = 0.0;
  size_t counted = 0;
  for (const Word& w : words) {
    if (contains(kAnomalyPunctuation, w.word)) continue;
    if (counted == 8) break;
    score += word_anomaly_score(w);
    ++counted;
  }
  return score >= 3 || score + 0.01 >= static_cast<double>(counted);
}

}  // namespace wisp::pipeline
