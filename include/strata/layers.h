// LayerStack: the upper directory, the read-only lower directories and the workdir, opened once
// at mount time and referred to by index everywhere else (0 = upper, 1..N = lowers, uppermost
// first). Also the mount-wide decisions that depend on what the upper filesystem permits: which
// xattr namespace carries overlay markers and whether whiteouts can be character devices.
#pragma once
#include <sys/types.h>

#include <expected>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "strata/options.h"
#include "strata/result.h"
#include "strata/unique_fd.h"

namespace strata {

struct Layer {
  int index = 0;      // 0 = upper, 1.. = lowers
  std::string path;   // as given on the command line: what messages and traces show
  UniqueFd root;      // O_RDONLY|O_DIRECTORY; invalid for the upper of a read-only mount
  dev_t dev = 0;
};

class LayerStack {
 public:
  // Check and open the directories named by `opts`. Errors are one line naming the option and
  // path ("lowerdir /x: No such file or directory"). Offline readers (the strata tool) pass
  // need_workdir=false: they never write, so an upperdir alone is enough.
  static std::expected<std::unique_ptr<LayerStack>, std::string> open(const MountOptions& opts,
                                                                       bool need_workdir = true);

  // For a writable mount: lock the workdir against a second mount, create and empty its staging
  // directory `work/` (leftovers of a crash), and probe what the upper filesystem permits.
  std::expected<void, std::string> prepare_workdir();

  bool has_upper() const { return bool(layers_[0].root); }
  int lower_count() const { return int(layers_.size()) - 1; }
  int layer_count() const { return int(layers_.size()); }
  const Layer& layer(int index) const { return layers_[index]; }
  const Layer& upper() const { return layers_[0]; }
  int work_fd() const { return work_.get(); }
  const std::string& workdir_path() const { return workdir_path_; }

  // The xattr namespace our own markers are written in: "trusted." when permitted, else "user."
  // (rootless). Both namespaces are honoured when reading.
  const std::string& xattr_prefix() const { return xattr_prefix_; }
  // Whether whiteouts can be written as character devices 0/0 (else `.wh.NAME` files).
  bool chardev_whiteouts() const { return chardev_whiteouts_; }
  // Test hook: write `.wh.NAME` markers, as on an upper that refuses character devices.
  void use_marker_whiteouts_for_test() { chardev_whiteouts_ = false; }
  bool volatile_mode() const { return volatile_mode_; }
  // Whether metadata-only copy-ups are made (metacopy=on). Metacopy files already in the upper
  // are read right either way.
  bool metacopy() const { return metacopy_; }

  // Make `name` in `dirfd` a whiteout as a hard link of one shared character device 0/0 kept in
  // the staging dir (the kernel overlay shares its whiteout inode the same way): a link costs far
  // less than allocating an inode per whiteout with mknod. Needs chardev_whiteouts().
  Status link_whiteout(int dirfd, const char* name) const;

  // st_ino shown for an object of a layer: its own ino, with the filesystem told apart in the top
  // byte when the layers span several filesystems (the kernel's xino idea).
  uint64_t presented_ino(dev_t dev, ino_t ino) const;

 private:
  std::expected<void, std::string> open_workdir(const MountOptions& opts);

  std::vector<Layer> layers_;
  std::string workdir_path_;
  UniqueFd workdir_;  // holds the flock that refuses a second mount
  UniqueFd work_;     // workdir/work: staging area for copy-up, whiteouts, opaque dirs
  std::string xattr_prefix_ = "trusted.";
  bool chardev_whiteouts_ = true;
  bool volatile_mode_ = false;
  bool metacopy_ = false;
  mutable std::mutex whiteout_mu_;  // making or replacing the shared whiteout
  mutable std::mutex dev_mu_;
  mutable std::unordered_map<dev_t, uint64_t> dev_index_;
};

}  // namespace strata
