// CallGatherer (call_gatherer.h).
#include "runtime/call_gatherer.h"

#include <stdexcept>

namespace wisp::runtime {

CallGatherer::CallGatherer(std::vector<Runner> runners, std::chrono::microseconds patience)
    : runners_(std::move(runners)), patience_(patience) {}

std::shared_ptr<void> CallGatherer::join() {
  const std::thread::id me = std::this_thread::get_id();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!members_.emplace(me, Member{}).second) throw std::logic_error("CallGatherer: this thread already joined");
  }
  return std::shared_ptr<void>(nullptr, [this, me](void*) {
    std::lock_guard<std::mutex> lock(mu_);
    members_.erase(me);
    cv_.notify_all();  // the others may have been waiting for this one
  });
}

std::shared_ptr<void> CallGatherer::busy() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = members_.find(std::this_thread::get_id());
  if (it == members_.end()) return nullptr;
  Member* m = &it->second;
  ++m->busy;
  m->away = false;
  cv_.notify_all();
  return std::shared_ptr<void>(nullptr, [this, m](void*) {
    std::lock_guard<std::mutex> lock(mu_);
    --m->busy;
  });
}

bool CallGatherer::everyone_ready() const {
  for (const auto& [id, m] : members_) {
    if (!m.waiting && m.busy == 0 && !m.away) return false;
  }
  return true;
}

void CallGatherer::run_batch(std::unique_lock<std::mutex>& lock, int kind) {
  std::vector<Pending*> batch;
  std::vector<Request*> requests;
  std::vector<Pending*> rest;
  for (Pending* p : queue_) {
    if (p->kind == kind) {
      p->taken = true;
      batch.push_back(p);
      requests.push_back(p->request);
    } else {
      rest.push_back(p);
    }
  }
  queue_.swap(rest);
  lock.unlock();
  std::exception_ptr error;
  try {
    runners_[static_cast<size_t>(kind)](requests);
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  ++stats_.batches;
  stats_.requests += static_cast<long>(batch.size());
  for (Pending* p : batch) {
    p->done = true;
    p->error = error;
    // Back to its own work from now on: a request arriving before it wakes up must wait for it.
    if (p->member) p->member->waiting = false;
  }
  cv_.notify_all();
}

void CallGatherer::submit(int kind, Request& request) {
  if (kind < 0 || static_cast<size_t>(kind) >= runners_.size()) throw std::logic_error("CallGatherer: unknown kind");
  std::unique_lock<std::mutex> lock(mu_);
  const auto it = members_.find(std::this_thread::get_id());
  Pending p;
  p.kind = kind;
  p.request = &request;
  p.member = it == members_.end() ? nullptr : &it->second;
  if (p.member) {
    p.member->waiting = true;
    p.member->away = false;
  }
  queue_.push_back(&p);
  cv_.notify_all();  // this may be the request the others were waiting for
  const auto deadline = std::chrono::steady_clock::now() + patience_;
  while (!p.done) {
    if (p.taken) {
      cv_.wait(lock);
      continue;
    }
    const bool late = std::chrono::steady_clock::now() >= deadline;
    if (!p.member || late || everyone_ready()) {
      if (late) {
        for (auto& [id, m] : members_) {
          if (!m.waiting && m.busy == 0) m.away = true;
        }
      }
      run_batch(lock, kind);
      continue;
    }
    cv_.wait_until(lock, deadline);
  }
  if (p.error) std::rethrow_exception(p.error);
}

CallGatherer::Stats CallGatherer::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace wisp::runtime
