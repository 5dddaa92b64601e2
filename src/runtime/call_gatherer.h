// CallGatherer: turns the device calls that concurrent transcriptions (one thread each) make at about the
// same time into one batched call. While N files are transcribed together, their decode steps run as one step
// over all their sequences and their windows as one encoder batch, instead of N small calls in turn.
//
// The transcription code stays sequential: each thread asks for its own call and gets its own result. A
// thread takes part while it holds the handle join() returns (a "member"). A member's request waits until
// every other member is waiting too (for a call of any kind), inside a device call that is not gathered
// (busy()), or away; then one of the waiting threads runs every pending request of that kind at once. A
// member that asks for nothing within `patience` of a request waiting for it is away (its CPU work between
// calls is long: word alignment, the end of its file): the batch runs without it, and nobody waits for it
// again until it asks for something. A request from a thread that is not a member runs at once, with
// whatever is pending of its kind.
//
// Host-only (no CUDA), so it is tested on the CPU: tests/unit/runtime_call_gatherer_test.cpp.
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace wisp::runtime {

class CallGatherer {
 public:
  // What a caller asks for; the runner of its kind knows the derived type.
  struct Request {
    virtual ~Request() = default;
  };
  // Runs a batch of requests of one kind (never empty, in the order they arrived) on the thread of one of
  // them, without the gatherer's lock. What it throws reaches every caller of the batch.
  using Runner = std::function<void(const std::vector<Request*>&)>;

  // runners[k] runs the requests of kind k.
  CallGatherer(std::vector<Runner> runners, std::chrono::microseconds patience);
  CallGatherer(const CallGatherer&) = delete;
  CallGatherer& operator=(const CallGatherer&) = delete;

  // Makes the calling thread a member until the handle goes (a thread joins once at a time).
  std::shared_ptr<void> join();
  // The calling member is inside a device call that is not gathered until the handle goes: the others do not
  // wait for it meanwhile. Null for a thread that is not a member.
  std::shared_ptr<void> busy();
  // Runs `request` (kind in [0, runners.size())) in a batch with the other pending requests of its kind and
  // returns when it has run, rethrowing what the runner threw.
  void submit(int kind, Request& request);

  // Batches run and requests in them so far (for tests and statistics).
  struct Stats {
    long batches = 0, requests = 0;
  };
  Stats stats() const;

 private:
  struct Member {
    bool waiting = false;  // has a request in the gatherer (pending or running)
    int busy = 0;          // inside busy() scopes
    bool away = false;     // let a batch go without it; not waited for until its next call
  };
  struct Pending {
    int kind = 0;
    Request* request = nullptr;
    Member* member = nullptr;  // null for a thread that is not a member
    bool taken = false, done = false;
    std::exception_ptr error;
  };

  bool everyone_ready() const;                                   // under mu_
  void run_batch(std::unique_lock<std::mutex>& lock, int kind);  // under mu_ (released while running)

  const std::vector<Runner> runners_;
  const std::chrono::microseconds patience_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::thread::id, Member> members_;
  std::vector<Pending*> queue_;  // not taken yet, in arrival order
  Stats stats_;
};

}  // namespace wisp::runtime
