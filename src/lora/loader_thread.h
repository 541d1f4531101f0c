// LoaderThread: the one thread that does the adapter cache's disk I/O (read, validate, convert an adapter
// into the host tier), so that the engine thread never waits on a disk. Jobs run one at a time in FIFO order.
// The job itself publishes its result (AdapterManager's job takes the manager's mutex to do so).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace lp::lora {

class LoaderThread {
 public:
  LoaderThread();
  // Drops the jobs not started yet and waits for the running one.
  ~LoaderThread();
  LoaderThread(const LoaderThread&) = delete;
  LoaderThread& operator=(const LoaderThread&) = delete;

  // Any thread. `job` must not throw (it reports its own failure); it runs on the loader thread.
  void submit(std::function<void()> job);

 private:
  void run();

  std::mutex mu_;  // guards queue_ and stop_ (not what the jobs touch)
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;  // last member: started once the queue exists
};

}  // namespace lp::lora
