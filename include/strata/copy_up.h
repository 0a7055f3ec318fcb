// The copy-up engine: copy one object of a lower layer into the upper layer, data and metadata,
// atomically: everything is built under a temporary name in the workdir's staging directory and
// renamed into place last, so a crash leaves either no upper copy or a complete one (leftovers
// in the staging directory are removed at the next mount).
//
// Data: reflink (FICLONE) when the filesystem can, else copy_file_range, else read/write; holes
// stay holes (SEEK_DATA/SEEK_HOLE). Metadata order matters: owner first (chown clears setuid and
// file capabilities), then mode, then xattrs (security.capability, ACLs), times last.
#pragma once
#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <string>

#include "strata/layers.h"
#include "strata/result.h"
#include "strata/unique_fd.h"

namespace strata {

struct CopyUpReport {
  uint64_t bytes = 0;           // data bytes copied (0 for metadata-only copies)
  const char* method = "none";  // reflink, copy_file_range, read/write, none
  uint64_t nanoseconds = 0;
};

struct CopyUpRequest {
  int src_dirfd = -1;          // where the source is: (src_dirfd, src_name); name "" = the fd itself
  std::string src_name;
  struct stat src_st {};
  int dst_dirfd = -1;          // upper directory to place the copy in
  std::string dst_name;
  bool with_data = true;       // false: an O_TRUNC open or truncate to 0 follows, skip the data
  // Metadata only (metacopy=on): the copy gets the source's size as a hole and the metacopy
  // marker; the data stays in the source until complete_metacopy. No fsync: there is no data
  // to lose, and a copy the crash took reads as the lower file again.
  bool metadata_only = false;
  uint64_t presented_ino = 0;  // recorded so st_ino survives the copy-up (0: don't record)
};

// Test hook: called before each chunk of data is written with the offset; a non-zero return is
// taken as that errno (failure injection for ENOSPC/EIO in the middle of a copy).
using CopyFaultHook = std::function<int(uint64_t offset)>;
void set_copy_fault_hook(CopyFaultHook hook);

// The xattr (in the mount's namespace) that records the st_ino a copied-up object had.
std::string ino_xattr_name(const LayerStack& stack);

// A copy built under a staging name in the workdir, not yet visible in the upper. Removed when
// dropped unless placed. Split from placing it so that the caller can hold the lock that makes
// the switch from lower to upper object atomic for its lookups (the data copy runs unlocked).
class StagedCopy {
 public:
  StagedCopy(const LayerStack& stack, std::string name) : stack_(&stack), name_(std::move(name)) {}
  StagedCopy(StagedCopy&& other) noexcept;
  StagedCopy& operator=(StagedCopy&&) = delete;
  ~StagedCopy();
  // Move it to (dirfd, name) of the upper; never replaces an existing name (EEXIST).
  Status place(int dirfd, const std::string& name);
  CopyUpReport report;

 private:
  const LayerStack* stack_;
  std::string name_;  // empty once placed or moved from
};

Result<StagedCopy> stage_copy_up(const LayerStack& stack, const CopyUpRequest& req);

// stage_copy_up + place at (req.dst_dirfd, req.dst_name).
Result<CopyUpReport> copy_up_object(const LayerStack& stack, const CopyUpRequest& req);

// Copy the data of `src` into `dst` (both regular files, dst empty). Exposed for unit tests.
Result<CopyUpReport> copy_file_data(int src, int dst, uint64_t size);

// A fresh name in the staging directory.
std::string staging_name(std::string_view what);

}  // namespace strata
