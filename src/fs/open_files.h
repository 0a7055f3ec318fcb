// OpenFiles: which real file the open files of each inode use, and whether through kernel
// passthrough. The kernel demands that all concurrent opens of an inode agree: all passthrough
// with one backing id, or none (passthrough.md, rules 1-2). One id per inode, reference counted,
// closed with the last release.
#pragma once
#include <sys/types.h>

#include <atomic>
#include <mutex>
#include <string>
#include <unordered_map>

#include "passthrough.h"
#include "strata/overlay.h"

namespace strata::fs {

struct DaemonCounters {
  std::atomic<uint64_t> read_requests{0}, write_requests{0}, open_files{0};
  std::atomic<uint64_t> passthrough_opens{0}, normal_opens{0}, estale_reopens{0};
  std::atomic<uint64_t> readdir_requests{0};  // READDIR(PLUS): what the kernel's listing cache saves
};

class OpenFiles {
 public:
  OpenFiles(Overlay& overlay, Passthrough* passthrough, DaemonCounters& counters)
      : overlay_(overlay), passthrough_(passthrough), counters_(counters) {}

  struct Binding {
    enum Outcome {
      Bound,   // use backing_id (0: normal FUSE I/O)
      Stale,   // the inode's files moved on (copied up) since this fd was opened: open again
      Rebind,  // the inode's open files use an older file than this one: new inode + ESTALE
    } outcome = Bound;
    int backing_id = 0;
    std::string why_not;  // when not passthrough: why (for the open trace)
  };
  // Bind the file `fd` (just opened for `node`) to the inode. `no_passthrough_why`: this open
  // must go through the daemon (its data is not in the file yet); the reason, for the trace.
  Binding bind(const NodePtr& node, int fd, const char* no_passthrough_why = nullptr);
  void unbind(const Node* node);
  // Would opening `node` with `flags` need another file than its open files use (a write copies
  // a lower file up)? Then the caller copies up and answers ESTALE instead of opening.
  bool must_rebind(const NodePtr& node, int flags);

 private:
  struct State {
    int opens = 0;
    bool passthrough = false;
    int backing_id = 0;
    dev_t dev = 0;  // the real file the open files use
    ino_t ino = 0;
    bool in_upper = false;
  };
  Overlay& overlay_;
  Passthrough* passthrough_;
  DaemonCounters& counters_;
  std::mutex mu_;  // a leaf lock
  std::unordered_map<const Node*, State> states_;
};

inline bool is_write_open(int flags) { return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC); }

}  // namespace strata::fs
