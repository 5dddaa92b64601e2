// plan_reorder (runtime/reorder_plan.h), the in-place beam reordering of the GPU backend: executing the plan
// on a batch (saves into spare slots, then the copies in order) must leave sequence i equal to what sequence
// origins[i] held before, for every origins, with one copy per changed sequence and saves only for sources
// that are themselves overwritten.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "runtime/reorder_plan.h"

namespace {

using wisp::runtime::plan_reorder;
using wisp::runtime::ReorderPlan;

// Runs the plan on `batch` distinct sequences and returns the first origins.size() of them afterwards.
std::vector<std::string> execute(const ReorderPlan& plan, std::vector<std::string> seqs, size_t n) {
  std::vector<std::string> spare;
  for (int s : plan.saves) spare.push_back(seqs[static_cast<size_t>(s)]);
  for (const auto& c : plan.copies) {
    seqs[static_cast<size_t>(c.to)] =
        c.from_spare ? spare.at(static_cast<size_t>(c.from)) : seqs[static_cast<size_t>(c.from)];
  }
  seqs.resize(n);
  return seqs;
}

void check(const std::vector<int>& origins, int batch) {
  std::vector<std::string> seqs;
  for (int b = 0; b < batch; ++b) seqs.push_back("seq" + std::to_string(b));
  const ReorderPlan plan = plan_reorder(origins, batch);
  std::vector<std::string> want;
  size_t changed = 0;
  for (size_t i = 0; i < origins.size(); ++i) {
    want.push_back(seqs[static_cast<size_t>(origins[i])]);
    changed += origins[i] != static_cast<int>(i);
  }
  EXPECT_EQ(execute(plan, seqs, origins.size()), want) << ::testing::PrintToString(origins);
  EXPECT_EQ(plan.copies.size(), changed) << ::testing::PrintToString(origins);
  for (int s : plan.saves) {
    // a saved source is overwritten itself and read by another sequence
    EXPECT_LT(static_cast<size_t>(s), origins.size());
    EXPECT_NE(origins[static_cast<size_t>(s)], s);
  }
}

TEST(ReorderPlan, CasesByHand) {
  check({0, 1, 2, 3, 4}, 5);  // nothing moves
  check({1, 0}, 2);           // a swap needs one save
  check({0, 0, 0, 0, 0}, 5);  // one beam survives
  check({2, 2, 0}, 3);        // a source overwritten after being read
  check({1, 2, 3, 4, 0}, 5);  // a cycle
  check({3, 3}, 5);           // the batch shrinks (sampling drops finished sequences)
  const ReorderPlan none = plan_reorder(std::vector<int>{0, 1, 2}, 3);
  EXPECT_TRUE(none.saves.empty());
  EXPECT_TRUE(none.copies.empty());
  EXPECT_EQ(plan_reorder(std::vector<int>{0, 0, 0}, 3).saves.size(), 0u);  // source 0 is never overwritten
}

TEST(ReorderPlan, RandomOrigins) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 2000; ++trial) {
    const int batch = 1 + static_cast<int>(rng() % 8);
    const int n = 1 + static_cast<int>(rng() % static_cast<unsigned>(batch));
    std::vector<int> origins(static_cast<size_t>(n));
    for (int& o : origins) o = static_cast<int>(rng() % static_cast<unsigned>(batch));
    check(origins, batch);
  }
}

}  // namespace
