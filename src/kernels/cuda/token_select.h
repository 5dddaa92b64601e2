// The search's per-row choice on the device (model/token_choice.h is the host form and the reference): the
// logit rules of each row (forbidden id ranges, the timestamp test), the log-softmax, then either the `top`
// most likely tokens or one token sampled at a temperature with a given uniform draw. A decode step then
// copies back a few ids and log-probabilities per row instead of the whole row of logits.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"

namespace wisp::kernels::cuda {

// The most tokens one row may ask for (a backend answers larger queries on the host).
inline constexpr int kMaxTopTokens = 32;

// One row's query (model::TokenQuery as plain data). Its forbidden ranges are ranges[first_range, first_range +
// n_ranges) of the call's range list.
struct TokenQueryRow {
  int32_t first_range = 0;
  int32_t n_ranges = 0;
  // ≥ 0: after the ranges, if log Σ exp of the logits from this id on exceeds every logit below it, the ids
  // below it are forbidden too; −1: no such test.
  int32_t timestamp_begin = -1;
  int32_t top = 1;           // 1 … kMaxTopTokens (ignored when sampling)
  double temperature = 0.0;  // > 0: sample one token at this temperature ...
  double uniform = 0.0;      // ... with this draw from [0, 1)
};

// For each row r < rows of logits (fp32, n columns, row stride ld): sets its forbidden logits to −inf (in
// place), applies the timestamp test, takes the log-softmax, and writes the query's answer to ids[r, ·] and
// logprobs[r, ·] (kMaxTopTokens entries per row, the first `top` used; one when sampling):
//   top:      the `top` largest logits, highest first, equal values the lower id first (−inf ones count when
//             fewer are finite), with their log-probabilities;
//   sampling: the first id whose cumulative weight exp((lp − max lp) / temperature), summed in double in id
//             order, exceeds uniform × the total (model::sample_from_logprobs).
// A row that the rules leave without a finite logit gets id −1. One block per row; not chained (it runs after
// a step, outside its graph). queries and ranges live on the device; a range is (begin, end), clamped to [0, n).
Status choose_tokens(float* logits /* [rows, ld] */, int64_t rows, int64_t n, int64_t ld,
                     const TokenQueryRow* queries /* [rows] */, const int2* ranges /* [Σ n_ranges] */,
                     int32_t* ids /* [rows, kMaxTopTokens] */, float* logprobs /* [rows, kMaxTopTokens] */,
                     cudaStream_t stream);

}  // namespace wisp::kernels::cuda
