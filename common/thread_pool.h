// ThreadPool: a fixed set of worker threads for data-parallel loops on the CPU.
//
// Workers sleep on a condition variable when idle (never busy-poll: under mpirun several ranks
// share 2 cores). ParallelFor splits [0, n) into contiguous chunks and blocks until all are done;
// the calling thread runs one chunk itself. Thread-safe: ParallelFor may be called from one
// thread at a time per pool (calls from several threads are serialised).
//
// Starting the threads can fail (a process or address-space limit: every thread maps a stack):
// Create reports it as a Status; the constructor throws.
#ifndef IPS_COMMON_THREAD_POOL_H_
#define IPS_COMMON_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/status.h"

namespace ips {

class ThreadPool {
 public:
  // num_threads counts the caller: 1 means "run everything inline", no threads are started.
  // When a thread cannot be started, stops those already started and throws std::system_error
  // whose what() names the pool size, the threads started and the system's reason.
  explicit ThreadPool(int num_threads);
  // The same pool, or that failure as RESOURCE_EXHAUSTED (the system's reason is usually
  // "Resource temporarily unavailable": fewer threads fit in the process's limits).
  static StatusOr<std::unique_ptr<ThreadPool>> Create(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n), each at least min_chunk long
  // (except possibly the last). Returns when every chunk has finished.
  void ParallelFor(int64_t n, int64_t min_chunk,
                   const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  void WorkerLoop(int worker_index);
  // Wakes every worker to exit and joins it.
  void StopWorkers();

  const int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // serialises ParallelFor callers
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  // Current job, guarded by mu_.
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_chunk_ = 0;
  int64_t next_chunk_ = 0;
  int64_t num_chunks_ = 0;
  int64_t chunks_done_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

// pool->ParallelFor(n, min_chunk, fn), or fn(0, n) on the calling thread when pool is nullptr
// (kernels take an optional pool).
void ParallelFor(ThreadPool* pool, int64_t n, int64_t min_chunk,
                 const std::function<void(int64_t begin, int64_t end)>& fn);

}  // namespace ips

#endif  // IPS_COMMON_THREAD_POOL_H_
