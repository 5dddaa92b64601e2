// choose_tokens (kernels/cuda/token_select.h) against a scalar reference written here from the rules of
// model/token_choice.h: forbidden ranges, the timestamp test, the log-softmax, the `top` choice (ties to the
// lower id, −inf entries counted) and the sampling walk. The ids must be equal (the ranking compares the same
// floats; sampling sums in double, so only a draw within ~1e-15 of a boundary could differ); log-probabilities
// within 2e-5 (fp32 log-sum-exp over 51,865 terms). Skips with "no CUDA device" without a GPU.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "kernels/cuda/token_select.h"
#include "kernels/cuda_test_support.h"

namespace wisp::kernels::cuda {
namespace {

using test::Dev;
using test::DeviceTest;
using test::download;
using test::upload;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kVocab = 51865, kTimestampBegin = 50364;  // the multilingual vocabulary

struct Query {
  std::vector<std::pair<int, int>> forbidden;
  int timestamp_begin = -1;
  int top = 1;
  double temperature = 0.0, uniform = 0.0;
};
struct Answer {
  std::vector<int> ids;
  std::vector<float> logprobs;
};

// The reference: the host rules in plain scalar code, sums in double.
Answer reference(std::vector<float> x, const Query& q) {
  const int n = static_cast<int>(x.size());
  for (const auto& [b, e] : q.forbidden) {
    for (int i = std::max(b, 0); i < std::min(e, n); ++i) x[static_cast<size_t>(i)] = kNegInf;
  }
  if (q.timestamp_begin >= 0) {
    const auto ts = x.begin() + q.timestamp_begin;
    const float max_text = q.timestamp_begin > 0 ? *std::max_element(x.begin(), ts) : kNegInf;
    const float max_ts = *std::max_element(ts, x.end());
    double s = 0;
    for (auto it = ts; it != x.end(); ++it) {
      if (*it > kNegInf) s += std::exp(static_cast<double>(*it - max_ts));
    }
    const double lse = max_ts == kNegInf ? -INFINITY : max_ts + std::log(s);
    if (lse > max_text) std::fill(x.begin(), ts, kNegInf);
  }
  Answer a;
  const float mx = *std::max_element(x.begin(), x.end());
  if (mx == kNegInf) {
    a.ids.push_back(-1);
    return a;
  }
  double s = 0;
  for (float v : x) {
    if (v > kNegInf) s += std::exp(static_cast<double>(v - mx));
  }
  const float lse = mx + static_cast<float>(std::log(s));
  std::vector<float> lp(x.size());
  for (size_t i = 0; i < x.size(); ++i) lp[i] = x[i] - lse;
  if (q.temperature > 0) {
    const float max_lp = mx - lse;
    double total = 0;
    for (float v : lp) {
      if (v > kNegInf) total += std::exp(static_cast<double>(v - max_lp) / q.temperature);
    }
    double cum = 0;
    int id = -1;
    for (int i = 0; i < n; ++i) {
      if (lp[static_cast<size_t>(i)] == kNegInf) continue;
      cum += std::exp(static_cast<double>(lp[static_cast<size_t>(i)] - max_lp) / q.temperature);
      id = i;
      if (cum > q.uniform * total) break;
    }
    a.ids.push_back(id);
    a.logprobs.push_back(lp[static_cast<size_t>(id)]);
    return a;
  }
  std::vector<int> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int i, int j) { return x[static_cast<size_t>(i)] > x[static_cast<size_t>(j)]; });
  for (int j = 0; j < q.top; ++j) {
    a.ids.push_back(order[static_cast<size_t>(j)]);
    a.logprobs.push_back(lp[static_cast<size_t>(order[static_cast<size_t>(j)])]);
  }
  return a;
}

// Runs the queries over rows of logits (row r at r · ld) in one launch and checks each row against the reference.
void check(const std::vector<std::vector<float>>& rows, const std::vector<Query>& queries, int64_t ld) {
  const int64_t n = static_cast<int64_t>(rows[0].size()), R = static_cast<int64_t>(rows.size());
  std::vector<float> flat(static_cast<size_t>(R * ld), 12345.0f);  // the padding must not be read
  for (int64_t r = 0; r < R; ++r) std::copy(rows[size_t(r)].begin(), rows[size_t(r)].end(), flat.begin() + r * ld);
  std::vector<TokenQueryRow> qrows;
  std::vector<int2> ranges;
  for (const Query& q : queries) {
    TokenQueryRow t;
    t.first_range = static_cast<int32_t>(ranges.size());
    t.n_ranges = static_cast<int32_t>(q.forbidden.size());
    t.timestamp_begin = q.timestamp_begin;
    t.top = q.top;
    t.temperature = q.temperature;
    t.uniform = q.uniform;
    for (const auto& [b, e] : q.forbidden) ranges.push_back(int2{b, e});
    qrows.push_back(t);
  }
  if (ranges.empty()) ranges.push_back(int2{0, 0});
  auto d_logits = upload(flat);
  auto d_queries = upload(qrows);
  auto d_ranges = upload(ranges);
  Dev<int32_t> d_ids(size_t(R) * kMaxTopTokens);
  Dev<float> d_lp(size_t(R) * kMaxTopTokens);
  d_ids.poison();
  EXPECT_STATUS_OK(
      choose_tokens(d_logits->get(), R, n, ld, d_queries->get(), d_ranges->get(), d_ids.get(), d_lp.get(), nullptr));
  test::sync_ok();
  const auto ids = download(d_ids.get(), d_ids.size());
  const auto lps = download(d_lp.get(), d_lp.size());
  for (int64_t r = 0; r < R; ++r) {
    const Answer want = reference(rows[size_t(r)], queries[size_t(r)]);
    for (size_t j = 0; j < want.ids.size(); ++j) {
      const size_t at = size_t(r) * kMaxTopTokens + j;
      ASSERT_EQ(ids[at], want.ids[j]) << "row " << r << ", entry " << j;
      if (want.ids[j] < 0) continue;
      const float got = lps[at], ref = want.logprobs[j];
      if (std::isinf(ref)) {
        EXPECT_EQ(got, ref) << "row " << r << ", entry " << j;
      } else {
        EXPECT_NEAR(got, ref, 2e-5) << "row " << r << ", entry " << j;
      }
    }
  }
}

std::vector<float> random_row(std::mt19937& rng, int n, float sigma = 3.0f) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = dist(rng);
  return x;
}

class CudaTokenSelect : public DeviceTest {};

TEST_F(CudaTokenSelect, TopTokensFollowTheRulesAndTies) {
  std::mt19937 rng(7);
  std::vector<std::vector<float>> rows;
  std::vector<Query> queries;
  // plain greedy, and beam-search sized tops
  for (int top : {1, 2, 10, kMaxTopTokens}) {
    rows.push_back(random_row(rng, kVocab));
    queries.push_back({{}, -1, top});
  }
  // equal maxima: the lower id first, through several passes
  {
    auto x = random_row(rng, kVocab);
    for (int id : {50000, 7, 31337, 12}) x[size_t(id)] = 40.0f;
    rows.push_back(x);
    queries.push_back({{}, -1, 6});
  }
  // suppressed ids (scattered and merged ranges), a range past the end, an empty and a reversed one
  {
    auto x = random_row(rng, kVocab);
    std::vector<std::pair<int, int>> forbid{{220, 221}, {50257, 50258}, {1, 100}, {51000, 1 << 30}, {5, 5}, {9, 3}};
    for (int id : {220, 50257, 50}) x[size_t(id)] = 50.0f;  // the best three, all forbidden
    rows.push_back(x);
    queries.push_back({forbid, -1, 5});
  }
  // fewer finite logits than asked for: the −inf ones follow by id
  {
    auto x = random_row(rng, kVocab);
    rows.push_back(x);
    queries.push_back({{{0, 1000}, {1003, 1 << 30}}, -1, 8});
  }
  check(rows, queries, kVocab);
}

TEST_F(CudaTokenSelect, TimestampTestForbidsTextOnlyWhenTimestampsOutweighIt) {
  std::mt19937 rng(11);
  std::vector<std::vector<float>> rows;
  std::vector<Query> queries;
  for (float ts_level : {-2.0f, 2.0f, 6.0f, 9.0f}) {
    auto x = random_row(rng, kVocab, 1.0f);
    x[size_t(rng() % kTimestampBegin)] = 12.0f;  // one strong text token
    for (int i = kTimestampBegin; i < kVocab; ++i) x[size_t(i)] += ts_level;
    for (int top : {1, 10}) {
      rows.push_back(x);
      // the initial-timestamp rules: text forbidden, timestamps only up to index 50
      queries.push_back({{{kTimestampBegin + 51, 1 << 30}}, kTimestampBegin, top});
      rows.push_back(x);
      queries.push_back({{}, kTimestampBegin, top});
    }
  }
  // every timestamp forbidden: the test cannot fire (log Σ exp of nothing is −inf)
  rows.push_back(random_row(rng, kVocab));
  queries.push_back({{{kTimestampBegin, 1 << 30}}, kTimestampBegin, 3});
  // everything forbidden: id −1
  rows.push_back(random_row(rng, kVocab));
  queries.push_back({{{0, 1 << 30}}, kTimestampBegin, 1});
  check(rows, queries, kVocab);
}

TEST_F(CudaTokenSelect, SamplingWalksTheCumulativeWeights) {
  std::mt19937 rng(3);
  std::vector<std::vector<float>> rows;
  std::vector<Query> queries;
  for (double t : {0.2, 0.6, 1.0}) {
    for (double u : {0.0, 0.25, 0.5, 0.999999}) {
      rows.push_back(random_row(rng, kVocab));
      queries.push_back({{{0, 3}, {40000, 40100}}, kTimestampBegin, 1, t, u});
    }
  }
  // a flat row: the draw picks id ≈ u · n among the allowed ones
  rows.emplace_back(size_t(kVocab), 0.5f);
  queries.push_back({{{0, 1000}}, -1, 1, 1.0, 0.5});
  // with a row stride wider than the row
  check(rows, queries, kVocab + 27);
}

TEST_F(CudaTokenSelect, RejectsBadShapes) {
  Dev<float> x(16);
  Dev<TokenQueryRow> q(1);
  Dev<int32_t> ids(kMaxTopTokens);
  Dev<float> lp(kMaxTopTokens);
  EXPECT_EQ(choose_tokens(x.get(), 1, 16, 8, q.get(), nullptr, ids.get(), lp.get(), nullptr), Status::kInvalidArgument);
  EXPECT_EQ(choose_tokens(x.get(), 1, 0, 16, q.get(), nullptr, ids.get(), lp.get(), nullptr), Status::kInvalidArgument);
  EXPECT_EQ(choose_tokens(nullptr, 1, 16, 16, q.get(), nullptr, ids.get(), lp.get(), nullptr),
            Status::kInvalidArgument);
  EXPECT_EQ(choose_tokens(x.get(), 0, 16, 16, q.get(), nullptr, ids.get(), lp.get(), nullptr), Status::kOk);
}

}  // namespace
}  // namespace wisp::kernels::cuda
