#include "sched/request.h"

namespace lp::sched {

void RequestChannel::push(Output out) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    q_.push_back(std::move(out));
  }
  cv_.notify_one();
  notify_listener();
}

void RequestChannel::abort() {
  aborted_.store(true);
  notify_listener();
}

void RequestChannel::set_listener(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(listener_mu_);
  listener_ = std::move(fn);
}

void RequestChannel::notify_listener() {
  std::lock_guard<std::mutex> lock(listener_mu_);
  if (listener_) listener_();
}

std::optional<Output> RequestChannel::pop(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !q_.empty(); })) return std::nullopt;
  Output o = std::move(q_.front());
  q_.pop_front();
  return o;
}

}  // namespace lp::sched
