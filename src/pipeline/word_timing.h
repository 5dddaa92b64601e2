// Word-level timestamps from the cross-attention of the alignment heads, as faster-whisper 1.2.1 computes
// them (add_word_timestamps / find_alignment over CTranslate2's Whisper.align), so words and times can be
// compared with the reference:
//
//   1. one teacher-forced decoder pass over [sot sequence, <|notimestamps|>, text tokens, <|endoftext|>];
//   2. for each alignment head: softmax of its scores over the window's content frames (num_frames / 2),
//      standardised per frame over the tokens (mean 0, variance 1), median filter of width 7 along time;
//      the mean over the heads, negated, goes through DTW: the monotonic path gives each token its frame;
//   3. tokens are grouped into words (at spaces, or at every complete UTF-8 character for zh/ja/th/lo/my/yue),
//      punctuation is merged into its neighbour, over-long words at sentence and pause boundaries are
//      clipped to twice the median word duration, and segment bounds move to their first/last word.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "model/whisper.h"
#include "tokenizer/tokenizer.h"
#include "wisp/transcript.h"

namespace wisp::pipeline {

// The reference's defaults (faster-whisper's transcribe() and openai-whisper's CLI).
inline constexpr const char* kPrependPunctuations = "\"'\u201c\u00bf([{-";
inline constexpr const char* kAppendPunctuations = "\"'.\u3002,\uff0c!\uff01?\uff1f:\uff1a\u201d)]}\u3001";

struct WordTimingOptions {
  std::string prepend_punctuations = kPrependPunctuations;  // merged into the word that follows
  std::string append_punctuations = kAppendPunctuations;    // merged into the word before
  int median_filter_width = 7;
};

// One segment of a 30 s window as the seek loop cut it at its timestamp tokens.
struct WindowSegment {
  std::vector<int> tokens;  // in: the segment's tokens as decoded; timestamps (ids >= eot) are skipped
  double start = 0.0;       // in/out: seconds from the start of the audio; moved to the first word's start
  double end = 0.0;         // in/out: ... and to the last word's end (or the word is clipped to the segment)
  std::vector<Word> words;  // out
};

// Adds word timestamps to the segments of one window (faster-whisper's add_word_timestamps for the
// sequential loop), setting each segment's `words` and adjusting its start/end.
//
//   segments              every segment cut from the window, in order, before empty or zero-length ones are
//                         dropped: all their text tokens are aligned together, as the reference does
//   cross                 the window's cross-attention K/V (WhisperModel::cross_kv of its encoder output)
//   sot_sequence          <|startoftranscript|> [language, task] as used to decode the window; its language
//                         token picks how words are split (English-only models: "en")
//   seek                  the window's first mel frame (10 ms units); times are offset by seek / 100 s
//   num_frames            the window's content frames (segment_size: min(3000, content frames - seek));
//                         attention beyond num_frames / 2 encoder positions (padding) is ignored
//   last_speech_timestamp end of the last word of the previous windows (0 at the start): a first word after
//                         a long pause is clipped to twice the median word duration
//
// The caller keeps its own last_speech_timestamp: after the window (and after any hallucination skip) the
// reference sets it to last_word_end(segments) when that has a value. Segments get no words when the
// window has no text tokens or no content frames. Throws ModelError when the model file lists no alignment
// heads (engine files converted from a CTranslate2 dir or Hugging Face model carry them).
void align_words(std::vector<WindowSegment>& segments, const model::WhisperModel& model, const model::CrossKV& cross,
                 const tokenizer::Tokenizer& tok, std::span<const int> sot_sequence, int seek, int num_frames,
                 double last_speech_timestamp, const WordTimingOptions& options = {});

// faster-whisper's get_end: the end of the last word of the segments, else the last segment's end; nullopt
// for no segments. The seek loop moves `seek` to this (when it is past the window start and the window did
// not end on a single timestamp) and sets last_speech_timestamp to it.
std::optional<double> last_word_end(std::span<const WindowSegment> segments);

// --hallucination-silence-threshold helpers (faster-whisper's word_anomaly_score / is_segment_anomaly):
// a word is anomalous when improbable (< 0.15), very short (< 0.133 s) or long (> 2 s); a segment when its
// first 8 non-punctuation words score >= 3 in total, or about 1 per word.
double word_anomaly_score(const Word& word);
bool is_segment_anomaly(std::span<const Word> words);

// ---- building blocks, exposed for tests ----

// A word of the alignment before it is placed in a segment: times are seconds from the window start.
struct WordTiming {
  std::string word;
  std::vector<int> tokens;
  double start = 0.0;
  double end = 0.0;
  double probability = 0.0;
};

// Words and their tokens (faster-whisper's Tokenizer.split_to_word_tokens): for zh, ja, th, lo, my and yue
// a word ends wherever the tokens so far decode to complete characters; otherwise subwords are joined
// until one starts with a space, is punctuation or is a special token.
std::pair<std::vector<std::string>, std::vector<std::vector<int>>> split_to_word_tokens(const tokenizer::Tokenizer& tok,
                                                                                        std::span<const int> tokens,
                                                                                        const std::string& language);
std::pair<std::vector<std::string>, std::vector<std::vector<int>>> split_tokens_on_unicode(
    const tokenizer::Tokenizer& tok, std::span<const int> tokens);
std::pair<std::vector<std::string>, std::vector<std::vector<int>>> split_tokens_on_spaces(
    const tokenizer::Tokenizer& tok, std::span<const int> tokens);

// Merges prepended punctuation into the following word and appended punctuation into the previous one
// (leaving empty words behind, as the reference does).
void merge_punctuations(std::vector<WordTiming>& alignment, const std::string& prepended, const std::string& appended);

// CTranslate2's MedianFilter: x [rows, cols] row-major, filtered along each row with reflect padding
// (width odd). Rows shorter than width / 2 + 1 are returned unchanged.
std::vector<float> median_filter(std::span<const float> x, int64_t rows, int64_t cols, int width);

// CTranslate2's negative_dtw: the minimum-cost monotonic path through -x [n, m] from (0, 0) to (n-1, m-1),
// as (row, column) pairs in order, with the reference's f32 costs and step choice: the diagonal or the
// vertical step only when strictly cheaper than both others, else the horizontal one.
std::vector<std::pair<int, int>> negative_dtw(std::span<const float> x, int64_t n, int64_t m);

// The alignment matrix of text_tokens (find_alignment's steps 1–2): [text_tokens.size() + 1, num_frames / 2]
// (the <|notimestamps|> row, then one per text token) and the probability of each text token given the
// ones before (a softmax over the ordinary tokens).
struct AlignmentMatrix {
  std::vector<float> matrix;
  int64_t rows = 0, cols = 0;
  std::vector<double> text_token_probs;
};
AlignmentMatrix alignment_matrix(const model::WhisperModel& model, const model::CrossKV& cross,
                                 const tokenizer::Tokenizer& tok, std::span<const int> sot_sequence,
                                 std::span<const int> text_tokens, int num_frames, int median_filter_width = 7);

// find_alignment: the words of text_tokens with their start/end (seconds from the window start) and mean
// token probability. Empty when there are no words.
std::vector<WordTiming> find_alignment(const model::WhisperModel& model, const model::CrossKV& cross,
                                       const tokenizer::Tokenizer& tok, std::span<const int> sot_sequence,
                                       std::span<const int> text_tokens, int num_frames, const std::string& language,
                                       int median_filter_width = 7);

// The language code a SOT sequence names ("en" for English-only models, whose sequence has none).
std::string sot_language(const tokenizer::Tokenizer& tok, std::span<const int> sot_sequence);

}  // namespace wisp::pipeline
