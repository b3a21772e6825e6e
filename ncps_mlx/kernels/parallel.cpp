// The thread pool of parallel.h.
//
// A call publishes its job under a new generation number; idle workers spin on that
// number for a short while before sleeping on a condition variable, since a sequence
// scan calls the kernels back to back (a wake from sleep costs tens of microseconds on
// a virtual machine, a step of a small model about a hundred). The calling thread takes
// pieces too, and returns once every worker has left the job.

#include "parallel.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>

namespace ncps {
namespace {

// How long an idle worker watches for the next job before it sleeps.
constexpr auto kSpin = std::chrono::microseconds(200);

struct Job {
  const std::function<void(int)>* body = nullptr;
  int pieces = 0;
  std::atomic<int> next{0};
  std::atomic<int> working{0}; // workers not yet done with this job
  std::exception_ptr error;
  std::mutex error_mutex;

  void run() {
    for (int i = next.fetch_add(1); i < pieces; i = next.fetch_add(1)) {
      try {
        (*body)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error)
          error = std::current_exception();
      }
    }
  }
};

class Pool {
 public:
  int size() const {
    return int(workers_.size()) + 1;
  }

  void resize(int count) {
    std::lock_guard<std::mutex> busy(busy_);
    stop_workers();
    stop_ = false;
    // A new worker starts from the generation of now, not of when its thread first
    // runs: a job published in between is its to take.
    const uint64_t now = generation_.load();
    for (int w = 1; w < count; ++w)
      workers_.emplace_back([this, now] { work(now); });
  }

  void run(int pieces, const std::function<void(int)>& body) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock() || workers_.empty() || pieces <= 1) {
      for (int i = 0; i < pieces; ++i)
        body(i);
      return;
    }
    job_.body = &body;
    job_.pieces = pieces;
    job_.error = nullptr;
    job_.next.store(0, std::memory_order_relaxed);
    job_.working.store(int(workers_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    job_.run();
    while (job_.working.load(std::memory_order_acquire) > 0)
      std::this_thread::yield();
    if (job_.error)
      std::rethrow_exception(job_.error);
  }

  // After fork() the child has the pool's memory but none of its threads: it forgets
  // them (they cannot be joined) and runs on one thread until told otherwise.
  void forget_after_fork() {
    new (&busy_) std::mutex;
    new (&mutex_) std::mutex;
    new (&wake_) std::condition_variable;
    for (auto& worker : workers_)
      new (new char[sizeof(std::thread)]) std::thread(std::move(worker));
    workers_.clear();
  }

 private:
  void work(uint64_t seen) {
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      while (generation_.load(std::memory_order_acquire) == seen && !stop_ &&
             std::chrono::steady_clock::now() < until)
        std::this_thread::yield();
      if (generation_.load(std::memory_order_acquire) == seen && !stop_) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load() != seen || stop_; });
      }
      if (stop_)
        return;
      seen = generation_.load(std::memory_order_acquire);
      job_.run();
      job_.working.fetch_sub(1, std::memory_order_release);
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_)
      worker.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex busy_; // held by the call running on the pool
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  Job job_;
};

// Never destroyed: at exit the workers end with the process, rather than being joined
// while the interpreter tears down.
Pool& pool() {
  static Pool* const instance = [] {
    auto* created = new Pool;
    pthread_atfork(nullptr, nullptr, [] { pool().forget_after_fork(); });
    return created;
  }();
  return *instance;
}

} // namespace

int thread_count() {
  return pool().size();
}

void set_thread_count(int count) {
  if (count < 1 || count > kMaxThreads)
    throw std::invalid_argument(
        "[ncps_mlx] the thread count must be in [1, " + std::to_string(kMaxThreads) + "], not " +
        std::to_string(count));
  if (count != pool().size())
    pool().resize(count);
}

void parallel_for(int pieces, const std::function<void(int)>& body) {
  pool().run(pieces, body);
}

} // namespace ncps
