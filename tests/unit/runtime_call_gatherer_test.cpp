// CallGatherer (runtime/call_gatherer.h): concurrent callers' requests run in batches, members wait for each
// other, busy and away members are not waited for, non-members run at once, errors reach every caller.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "runtime/call_gatherer.h"

namespace wisp::runtime {
namespace {

using namespace std::chrono_literals;

struct Doubling : CallGatherer::Request {
  int kind = 0;
  int in = 0, out = 0;
};

// Runs a batch by doubling every input, and records the batch sizes and kinds.
struct Recorder {
  std::mutex mu;
  std::vector<size_t> sizes;
  std::vector<int> kinds;
  bool fail = false;
  int foreign = 0;  // requests of another kind in a batch
  CallGatherer::Runner runner(int kind) {
    return [this, kind](const std::vector<CallGatherer::Request*>& batch) {
      {
        std::lock_guard<std::mutex> lock(mu);
        sizes.push_back(batch.size());
        kinds.push_back(kind);
        for (auto* r : batch) foreign += static_cast<Doubling*>(r)->kind != kind;
      }
      if (fail) throw std::runtime_error("device lost");
      for (auto* r : batch) {
        auto* d = static_cast<Doubling*>(r);
        d->out = 2 * d->in;
      }
    };
  }
};

TEST(CallGatherer, NonMembersRunAtOnce) {
  Recorder rec;
  CallGatherer g({rec.runner(0)}, 10s);
  for (int i = 0; i < 3; ++i) {
    Doubling d;
    d.in = i;
    g.submit(0, d);
    EXPECT_EQ(d.out, 2 * i);
  }
  EXPECT_EQ(g.stats().batches, 3);
  EXPECT_EQ(rec.sizes, (std::vector<size_t>{1, 1, 1}));
}

// Waits until `n` threads have arrived.
void arrive_and_wait(std::atomic<int>& arrived, int n) {
  ++arrived;
  while (arrived < n) std::this_thread::sleep_for(1ms);
}

// Four members in lockstep: every batch holds one request of each member still there; a member that leaves
// early is not waited for.
TEST(CallGatherer, MembersRunInLockstep) {
  Recorder rec;
  CallGatherer g({rec.runner(0)}, 10s);  // patience far beyond the test: only readiness launches batches
  std::atomic<int> wrong{0}, joined{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const auto member = g.join();
      arrive_and_wait(joined, 4);
      const int calls = t == 3 ? 10 : 20;
      for (int i = 0; i < calls; ++i) {
        Doubling d;
        d.in = 100 * t + i;
        g.submit(0, d);
        wrong += d.out != 2 * d.in;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(g.stats().requests, 70);
  EXPECT_EQ(g.stats().batches, 20);
  for (size_t i = 0; i < rec.sizes.size(); ++i) EXPECT_EQ(rec.sizes[i], i < 10 ? 4u : 3u) << "batch " << i;
}

// Kinds never mix in a batch; members waiting for another kind count as ready.
TEST(CallGatherer, KindsRunSeparately) {
  Recorder rec;
  CallGatherer g({rec.runner(0), rec.runner(1)}, 10s);
  std::atomic<int> joined{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const auto member = g.join();
      arrive_and_wait(joined, 4);
      for (int i = 0; i < 10; ++i) {
        Doubling d;
        d.kind = (t + i) % 2;
        g.submit(d.kind, d);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(g.stats().requests, 40);
  EXPECT_EQ(rec.foreign, 0);
  EXPECT_LT(g.stats().batches, 40);  // some gathering happened (every member waits for the others)
}

TEST(CallGatherer, BusyMembersAreNotWaitedFor) {
  Recorder rec;
  CallGatherer g({rec.runner(0)}, 10s);
  std::atomic<bool> busy_held{false}, done{false};
  std::thread other([&] {
    const auto member = g.join();
    const auto busy = g.busy();
    busy_held = true;
    while (!done) std::this_thread::sleep_for(1ms);
  });
  const auto member = g.join();
  while (!busy_held) std::this_thread::sleep_for(1ms);
  const auto t0 = std::chrono::steady_clock::now();
  Doubling d;
  d.in = 7;
  g.submit(0, d);  // would wait 10 s if the busy member were waited for
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(d.out, 14);
  done = true;
  other.join();
}

// A member that thinks for long is waited for once (patience), then counts as away until it calls again.
TEST(CallGatherer, AbsentMembersAreWaitedForOnce) {
  Recorder rec;
  CallGatherer g({rec.runner(0)}, 50ms);
  std::atomic<bool> joined{false}, done{false};
  std::thread slow([&] {
    const auto member = g.join();
    joined = true;
    while (!done) std::this_thread::sleep_for(1ms);  // thinking, no request
  });
  const auto member = g.join();
  while (!joined) std::this_thread::sleep_for(1ms);
  const auto t0 = std::chrono::steady_clock::now();
  Doubling first;
  g.submit(0, first);
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 50ms);
  const auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    Doubling d;
    g.submit(0, d);
  }
  // Twenty more calls without waiting the patience again (20 × 50 ms = 1 s if they did).
  EXPECT_LT(std::chrono::steady_clock::now() - t1, 500ms);
  done = true;
  slow.join();
  EXPECT_EQ(g.stats().batches, 21);
}

TEST(CallGatherer, ErrorsReachEveryCallerOfTheBatch) {
  Recorder rec;
  rec.fail = true;
  CallGatherer g({rec.runner(0)}, 10s);
  std::atomic<int> caught{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      const auto member = g.join();
      Doubling d;
      try {
        g.submit(0, d);
      } catch (const std::runtime_error& e) {
        caught += std::string(e.what()) == "device lost";
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(caught, 3);
}

TEST(CallGatherer, RejectsMisuse) {
  Recorder rec;
  CallGatherer g({rec.runner(0)}, 1ms);
  Doubling d;
  EXPECT_THROW(g.submit(1, d), std::logic_error);
  const auto member = g.join();
  EXPECT_THROW(g.join(), std::logic_error);
  EXPECT_EQ(CallGatherer({rec.runner(0)}, 1ms).busy(), nullptr);
}

}  // namespace
}  // namespace wisp::runtime
