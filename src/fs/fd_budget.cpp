#include "fd_budget.h"

#include <sys/resource.h>

#include <chrono>

#include "fuse_ops.h"

namespace strata::fs {

namespace {

constexpr int64_t kReserve = 256;  // for open files, the layers, /dev/fuse, libraries

}  // namespace

FdBudget::FdBudget(Daemon& daemon, struct fuse_session* session) : daemon_(daemon), session_(session) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    limit_ = std::max<int64_t>(int64_t(rl.rlim_cur) - kReserve, 64);
  else
    limit_ = 1 << 20;
  thread_ = std::thread([this] { run(); });
}

FdBudget::~FdBudget() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

int64_t FdBudget::held() const { return HeldDirFd::count.load(std::memory_order_relaxed); }

void FdBudget::note_growth() {
  if (held() * 10 < limit_ * 6) return;  // below 60%: nothing to do
  {
    std::lock_guard lock(mu_);
    pending_ = true;
  }
  wake_.notify_one();
}

bool FdBudget::tight() const { return held() * 10 >= limit_ * 8; }

void FdBudget::wait_for_room() {
  note_growth();
  {
    std::lock_guard lock(mu_);
    pending_ = true;
  }
  wake_.notify_one();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (held() * 10 >= limit_ * 9 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

void FdBudget::run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    wake_.wait(lock, [&] { return stop_ || pending_; });
    if (stop_) break;
    pending_ = false;
    lock.unlock();
    // Ask the kernel to drop entries of directories until we are back under half the budget.
    for (int round = 0; round < 8 && held() * 2 > limit_; ++round) {
      auto dirs = daemon_.overlay->table().directories();
      size_t asked = 0;
      for (const auto& dir : dirs) {
        NodePtr parent;
        std::string name;
        {
          std::lock_guard node_lock(dir->mu);
          parent = dir->parent;
          name = dir->name;
        }
        if (!parent) continue;
        fuse_lowlevel_notify_inval_entry(session_, nodeid_of(daemon_, parent.get()), name.c_str(), name.size());
        if (++asked >= dirs.size() / 2 + 1) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the FORGETs arrive
    }
    lock.lock();
  }
}

}  // namespace strata::fs
