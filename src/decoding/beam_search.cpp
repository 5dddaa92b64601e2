#include "decoding/beam_search.h"

#include <algorithm>
#include <cmath>

#include "ops/ops.h"
#include "wisp/errors.h"

namespace wisp::decoding {

using core::Tensor;

namespace {

struct Candidate {
  int id;       // token
  int beam;     // the beam it extends
  float score;  // that beam's cumulative log-probability plus the token's
};

// The `count` best entries of scores[n] (highest first; equal scores keep the lower index first).
void top_k(const std::vector<float>& scores, int vocab, int count, std::vector<Candidate>& out) {
  out.clear();
  auto better = [](const Candidate& a, const Candidate& b) { return a.score > b.score; };
  const size_t n = scores.size();
  for (size_t i = 0; i < n; ++i) {
    // Once `count` candidates are held, jump to the next score above the weakest (a vectorised scan: the
    // rows × vocabulary scores of every step are mostly below it).
    if (static_cast<int>(out.size()) == count) {
      i += static_cast<size_t>(ops::first_above(std::span<const float>(scores).subspan(i), out.back().score));
      if (i >= n) break;
    }
    const float s = scores[i];
    const Candidate c{static_cast<int>(i % static_cast<size_t>(vocab)),
                      static_cast<int>(i / static_cast<size_t>(vocab)), s};
    // Insert after every entry with a score >= s: ties keep the lower flat index first.
    auto pos = std::upper_bound(out.begin(), out.end(), c, better);
    out.insert(pos, c);
    if (static_cast<int>(out.size()) > count) out.pop_back();
  }
}

}  // namespace

WindowResult decode_beam(const model::WhisperModel& model, const model::CrossKV& cross, const PromptState& prompt,
                         const FilterConfig& filters, const tokenizer::SpecialTokens& sp, int max_new_tokens,
                         const BeamOptions& options) {
  const int beam_size = options.beam_size;
  if (beam_size < 1) throw InvalidArgument("the beam size must be at least 1");
  if (!(options.patience > 0)) throw InvalidArgument("the beam search patience must be > 0");
  if (max_new_tokens < 1) throw InvalidArgument("nothing to decode: no room left in the decoder context");
  const int n_vocab = model.dims().n_vocab;
  // More candidates than beams, so beams that end can be replaced by running ones.
  const int n_candidates = 2 * beam_size;
  const size_t max_hypotheses =
      static_cast<size_t>(std::round(static_cast<float>(beam_size) * static_cast<float>(options.patience)));
  // Without a length penalty the first finished top beam cannot be beaten (CTranslate2's early exit).
  const bool early_exit = options.length_penalty == 0;

  struct Beam {
    std::vector<int> tokens;
    float score;
  };
  struct Hypothesis {
    std::vector<int> tokens;
    float sum;  // cumulative log-probability (with the end token's)
  };
  const FilterConfig f = filters_after(filters, prompt);
  std::vector<Beam> beams{{{}, 0.0f}};        // the first step expands the prompt's single row
  std::vector<float> logits = prompt.logits;  // [beams, n_vocab]
  std::vector<float> scores;
  std::vector<Candidate> cand;
  std::vector<Hypothesis> finished;
  model::BatchKVCache cache;
  bool top_beam_finished = false;

  for (int step = 0; step < max_new_tokens; ++step) {
    const int rows = static_cast<int>(beams.size());
    scores.resize(static_cast<size_t>(rows) * n_vocab);
    for (int r = 0; r < rows; ++r) {
      std::span<float> row(logits.data() + static_cast<size_t>(r) * n_vocab, static_cast<size_t>(n_vocab));
      apply_filters(row, beams[static_cast<size_t>(r)].tokens, f, sp);
      ops::log_softmax_(row);
      const float base = beams[static_cast<size_t>(r)].score;
      float* out = scores.data() + static_cast<size_t>(r) * n_vocab;
      for (int v = 0; v < n_vocab; ++v) out[v] = row[static_cast<size_t>(v)] + base;
    }
    top_k(scores, n_vocab, n_candidates, cand);
    if (!prompt.forced.empty() && step == 0) {
      for (size_t k = 1; k < cand.size(); ++k) {
        if (cand[k].id == sp.eot) cand[k] = {0, cand[k].beam, -1e10f};
      }
    }

    const bool last_step = step + 1 == max_new_tokens;
    std::vector<size_t> active(static_cast<size_t>(beam_size));
    size_t secondary = static_cast<size_t>(beam_size);
    for (size_t k = 0; k < static_cast<size_t>(beam_size) && k < cand.size(); ++k) {
      size_t next = k;
      if (cand[k].id == sp.eot || last_step) {
        if (k == 0) top_beam_finished = true;
        Hypothesis h{beams[static_cast<size_t>(cand[k].beam)].tokens, cand[k].score};
        if (cand[k].id != sp.eot) h.tokens.push_back(cand[k].id);
        finished.push_back(std::move(h));
        // The slot continues with the next candidate that is not an end of text.
        for (size_t j = secondary; j < cand.size(); ++j) {
          if (cand[j].id != sp.eot) {
            next = j;
            secondary = j + 1;
            break;
          }
        }
      }
      active[k] = next;
    }
    const bool done =
        last_step || (early_exit ? top_beam_finished && !finished.empty() : finished.size() >= max_hypotheses);
    if (done) break;

    std::vector<Beam> next_beams;
    std::vector<int> origins, inputs;
    next_beams.reserve(static_cast<size_t>(beam_size));
    for (size_t k = 0; k < static_cast<size_t>(beam_size); ++k) {
      const Candidate& c = cand[active[k]];
      Beam b{beams[static_cast<size_t>(c.beam)].tokens, c.score};
      b.tokens.push_back(c.id);
      next_beams.push_back(std::move(b));
      origins.push_back(c.beam);
      inputs.push_back(c.id);
    }
    if (step == 0) {
      // Every beam descends from the prompt's row.
      cache = model.new_batch_cache(beam_size);
      model::broadcast_cache(prompt.cache, cache, beam_size);
    } else {
      model::reorder_cache(cache, origins);
    }
    beams = std::move(next_beams);
    const Tensor l = model.decode_batch_logits(inputs, cross, cache);  // [beam_size, n_vocab]
    logits.assign(l.data<float>(), l.data<float>() + static_cast<size_t>(beam_size) * n_vocab);
  }

  return finish_best(prompt, finished, options.length_penalty);
}

}  // namespace wisp::decoding
