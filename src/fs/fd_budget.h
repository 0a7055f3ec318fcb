// FdBudget: keeps the daemon under RLIMIT_NOFILE on big trees. Directory nodes hold an fd per
// layer, and the kernel keeps every dentry it has seen until memory runs short, so a walk of a
// tree with more directories than descriptors would end in EMFILE. Before that happens, a
// background thread asks the kernel to drop cached entries of directories
// (notify_inval_entry); the kernel then forgets the unused ones and their fds are closed. Cached
// entries are only a cache: dropping them costs a lookup later, never correctness.
#pragma once
#include <fuse_lowlevel.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "strata/overlay.h"

namespace strata::fs {

struct Daemon;

class FdBudget {
 public:
  FdBudget(Daemon& daemon, struct fuse_session* session);
  ~FdBudget();

  // After a lookup made nodes: wake the shedding thread when above the high-water mark.
  void note_growth();
  // Close to the limit: readdirplus should not make directory nodes now.
  bool tight() const;
  // A lookup hit EMFILE/ENFILE: shed now and wait (bounded) for descriptors to come back.
  void wait_for_room();

 private:
  void run();
  int64_t held() const;

  Daemon& daemon_;
  struct fuse_session* session_;
  int64_t limit_ = 1024;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false, pending_ = false;
  std::thread thread_;
};

}  // namespace strata::fs
