#include "decoding/beam_search.h"

#include <algorithm>
#include <cmath>

#include "wisp/errors.h"

namespace wisp::decoding {

using core::Tensor;

namespace {

struct Candidate {
  int id;       // token
  int beam;     // the beam it extends
  float score;  // that beam's cumulative log-probability plus the token's
};

// The `count` best candidates over every beam's chosen tokens: each beam's `count` most likely tokens hold the
// overall best `count` of the beams × vocabulary scores. Highest score first; equal scores keep the lower
// (beam, id) first, as a top-k over the flattened scores does.
void best_candidates(const std::vector<model::TokenChoice>& choices, const std::vector<float>& base, int count,
                     std::vector<Candidate>& out) {
  out.clear();
  for (size_t r = 0; r < choices.size(); ++r) {
    for (size_t j = 0; j < choices[r].ids.size(); ++j) {
      out.push_back({choices[r].ids[j], static_cast<int>(r), base[r] + choices[r].logprobs[j]});
    }
  }
  std::sort(out.begin(), out.end(), [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.beam != b.beam ? a.beam < b.beam : a.id < b.id;
  });
  if (static_cast<int>(out.size()) > count) out.resize(static_cast<size_t>(count));
}

}  // namespace

WindowResult decode_beam(const model::WhisperModel& model, const model::CrossKV& cross, const PromptState& prompt,
                         const FilterConfig& filters, const tokenizer::SpecialTokens& sp, int max_new_tokens,
                         const BeamOptions& options) {
  const int beam_size = options.beam_size;
  if (beam_size < 1) throw InvalidArgument("the beam size must be at least 1");
  if (!(options.patience > 0)) throw InvalidArgument("the beam search patience must be > 0");
  if (max_new_tokens < 1) throw InvalidArgument("nothing to decode: no room left in the decoder context");
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
  // Each beam's next tokens: its `n_candidates` most likely after the rules of its own tokens.
  auto query_for = [&](const Beam& beam) {
    model::TokenQuery q;
    q.rules = token_rules(beam.tokens, f, sp);
    q.top = n_candidates;
    return q;
  };
  std::vector<Beam> beams{{{}, 0.0f}};  // the first step expands the prompt's single row
  std::vector<float> first = prompt.logits;
  std::vector<model::TokenChoice> choices{model::choose_tokens(first, query_for(beams[0]))};
  std::vector<float> base;
  std::vector<Candidate> cand;
  std::vector<Hypothesis> finished;
  model::BatchKVCache cache;
  bool top_beam_finished = false;

  for (int step = 0; step < max_new_tokens; ++step) {
    base.clear();
    for (const Beam& b : beams) base.push_back(b.score);
    best_candidates(choices, base, n_candidates, cand);
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
    std::vector<model::TokenQuery> queries;
    for (const Beam& b : beams) queries.push_back(query_for(b));
    choices = model.decode_batch_choose(inputs, cross, cache, queries);
  }

  return finish_best(prompt, finished, options.length_penalty);
}

}  // namespace wisp::decoding
