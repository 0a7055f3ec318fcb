// SmallMutex: a 4-byte mutex (a futex word: 0 free, 1 locked, 2 locked with waiters) for locks
// that exist once per node. std::mutex costs 40 bytes, and the daemon holds a node for every
// file the kernel remembers (tens of thousands after a walk). For short critical sections only:
// no fairness, no timed waits.
#pragma once
#include <atomic>
#include <cstdint>

namespace strata {

class SmallMutex {
 public:
  SmallMutex() = default;
  SmallMutex(const SmallMutex&) = delete;
  SmallMutex& operator=(const SmallMutex&) = delete;

  void lock() noexcept {
    uint32_t expected = 0;
    if (state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed)) return;
    // Contended: mark "waiters" and sleep until the holder's unlock wakes one of us.
    while (state_.exchange(2, std::memory_order_acquire) != 0) state_.wait(2, std::memory_order_relaxed);
  }
  bool try_lock() noexcept {
    uint32_t expected = 0;
    return state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed);
  }
  void unlock() noexcept {
    if (state_.exchange(0, std::memory_order_release) == 2) state_.notify_one();
  }

 private:
  std::atomic<uint32_t> state_{0};
};

}  // namespace strata
