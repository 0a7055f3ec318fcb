// DirListings: merged directory listings kept between the READDIR requests of one pass, without
// directory handles.
//
// The daemon has no opendir: the kernel then sends neither OPENDIR nor RELEASEDIR (two round
// trips per directory a walk enters) and keeps each listing in its page cache, so a second walk
// costs no request at all. What a handle gave, a stable listing while a reader goes through it,
// comes from snapshots instead: a READDIR at offset 0 reads the merged directory into a new
// snapshot with a number of its own, and every offset handed to the kernel carries that number
// (high 32 bits) and the position in the snapshot (low 32 bits). A reader resumes in its own
// snapshot even when another reader started a newer one after a change. Snapshots are kept for
// the most recent passes only (bounded by count and entries); a reader whose snapshot was
// dropped meanwhile continues by position in a fresh one.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "strata/node.h"
#include "strata/readdir.h"

namespace strata::fs {

class DirListings {
 public:
  using Entries = std::shared_ptr<const std::vector<MergedEntry>>;
  struct Snapshot {
    Entries entries;
    uint32_t id = 0;
  };

  // The snapshot `off` belongs to (off != 0) if still kept, else null.
  Entries find(const Node* dir, uint32_t id);
  // Keep `entries` as a new snapshot of `dir`; returns its id.
  uint32_t add(const NodePtr& dir, std::vector<MergedEntry> entries, Entries* out);

  static uint32_t snapshot_of(int64_t off) { return uint32_t(uint64_t(off) >> 32); }
  static uint32_t position_of(int64_t off) { return uint32_t(uint64_t(off) & 0xffffffffu); }
  static int64_t offset(uint32_t snapshot, uint32_t position) {
    return int64_t((uint64_t(snapshot) << 32) | position);
  }

 private:
  struct Kept {
    NodePtr dir;  // held: a freed node's address could come back as another directory
    uint32_t id;
    Entries entries;
  };
  static constexpr size_t kMaxSnapshots = 64;
  static constexpr size_t kMaxEntries = 256 * 1024;

  std::mutex mu_;
  std::list<Kept> kept_;  // most recent first
  size_t entries_ = 0;
  uint32_t next_id_ = 1;
};

}  // namespace strata::fs
