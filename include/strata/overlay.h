// Overlay: the FUSE-free engine. Every operation a mounted overlay needs, on Nodes, returning
// Result. The FUSE adapter (src/fs) maps nodeids to Nodes and turns each Result into one reply;
// unit tests drive this class directly on temporary directories.
#pragma once
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/copy_up.h"
#include "strata/id_map.h"
#include "strata/inode_table.h"
#include "strata/layers.h"
#include "strata/readdir.h"
#include "strata/resolve.h"
#include "strata/result.h"
#include "strata/trace.h"

namespace strata {

struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
  // For new objects: the caller's umask when the kernel left it to us (0 when it applied it).
  // It applies only where the parent directory has no default ACL (POSIX).
  mode_t umask = 0;
};

struct Entry {
  NodePtr node;
  struct stat attr {};
};

// setattr request, independent of FUSE's bit layout.
struct AttrChange {
  bool mode = false, uid = false, gid = false, size = false, atime = false, mtime = false;
  bool atime_now = false, mtime_now = false, ctime = false;
  struct stat values {};
};

// Counters for the SIGUSR1 summary and tests.
struct OverlayStats {
  std::atomic<uint64_t> copyups{0}, copyup_bytes{0}, whiteouts{0}, opaque_dirs{0};
  std::vector<std::atomic<uint64_t>> lookups_per_layer;
  std::atomic<uint64_t> negative_lookups{0};
};

class Overlay {
 public:
  Overlay(std::unique_ptr<LayerStack> stack, Tracer* tracer);
  Status init();
  // Owners as the mount shows them vs on disk (uidmapping=, squash_to_*=); identity by default.
  void set_id_maps(IdMap uids, IdMap gids) {
    uid_map_ = std::move(uids);
    gid_map_ = std::move(gids);
  }
  // Turn a real stat of a layer object into what the mount shows (owner mapping).
  void present(struct stat& st) const {
    st.st_uid = uid_map_.shown(st.st_uid);
    st.st_gid = gid_map_.shown(st.st_gid);
  }

  const LayerStack& stack() const { return *stack_; }
  InodeTable& table() { return table_; }
  const NodePtr& root() const { return root_; }
  OverlayStats& stats() { return stats_; }
  Tracer* tracer() const { return tracer_; }

  // The merged path of a node, for messages and traces ("/etc/passwd").
  std::string path_of(const Node& node) const;
  std::string child_path(const Node& parent, std::string_view name) const;
  // The layer the node's top object is in (0 = upper).
  int layer_of(const Node& node) const;

  // Lookups count for the kernel: each successful lookup/create/link adds one (forget removes).
  // `first_lower`: see resolve_child (readdirplus knows where each entry lives).
  Result<Entry> lookup(const NodePtr& parent, std::string_view name, int first_lower = 0);
  void forget(Node* node, uint64_t n) { table_.forget(node, n); }
  Result<struct stat> getattr(const NodePtr& node);
  Result<struct stat> setattr(const NodePtr& node, const AttrChange& change, int open_fd);
  Result<std::string> readlink(const NodePtr& node);

  Result<Entry> mknod(const NodePtr& parent, std::string_view name, mode_t mode, dev_t rdev, Caller who);
  Result<Entry> mkdir(const NodePtr& parent, std::string_view name, mode_t mode, Caller who);
  Result<Entry> symlink(const NodePtr& parent, std::string_view name, const std::string& target, Caller who);
  Result<std::pair<Entry, UniqueFd>> create(const NodePtr& parent, std::string_view name, mode_t mode,
                                             int flags, Caller who);
  Result<Entry> link(const NodePtr& node, const NodePtr& new_parent, std::string_view new_name);
  Status unlink(const NodePtr& parent, std::string_view name);
  Status rmdir(const NodePtr& parent, std::string_view name);
  Status rename(const NodePtr& old_parent, std::string_view old_name, const NodePtr& new_parent,
                std::string_view new_name, unsigned flags);

  // Open a non-directory; opening for writing (or O_TRUNC) copies it up first. `defer_data`
  // (metacopy=on, a caller that will call copy_up before the first write through the fd): a
  // write open copies the attributes only, and the fd is the upper file without its data yet
  // (data_in_upper says whether it is there). `touch` then copies no data, as a chmod.
  Result<UniqueFd> open(const NodePtr& node, int flags, bool defer_data = false);
  Result<std::vector<MergedEntry>> read_dir(const NodePtr& dir);
  Result<struct statvfs> statfs();

  Result<std::string> getxattr(const NodePtr& node, const std::string& attr);
  Result<std::vector<std::string>> listxattr(const NodePtr& node);
  Status setxattr(const NodePtr& node, const std::string& attr, std::string_view value, int flags);
  Status removexattr(const NodePtr& node, const std::string& attr);

  // Whether the node's top object is in the upper layer.
  bool in_upper(const Node& node) const;
  // Whether its data is too: false for a metacopy file, whose data is still the lower file's.
  // What open files are bound to (passthrough, reads that follow a copy-up) depends on this.
  bool data_in_upper(const Node& node) const;
  // Let the object behind `node` get a fresh node (a new nodeid for the kernel) at its next
  // lookup: the old one stays valid for what already holds it (open files). Used when the file
  // an inode's open files are bound to must change (copy-up under kernel passthrough).
  void retire_node(const NodePtr& node);
  // Copy `node` up for a new node, leaving `node` itself on the lower file for the open files
  // that still use it (it is retired: the next lookup of the name makes the new node). What they
  // see stays consistent: the old data and the old attributes.
  Status copy_up_and_split(const NodePtr& node, bool with_data);

  // Make sure `node` (and all its ancestors) exist in the upper layer, data included (a
  // metacopy file gets its data: see complete_metacopy).
  Status copy_up(const NodePtr& node, bool with_data = true);
  // The same for a change of attributes only (chmod, chown, utimes, xattrs): with metacopy=on a
  // lower regular file gets a metadata-only copy (the kernel's metacopy format); else copy_up.
  Status copy_up_metadata(const NodePtr& node);
  // Before the first write through an open whose data copy-up was deferred (open's defer_data):
  // copy the data, from `data_fd` (the data file opened with it) when the name no longer leads
  // to it (the file was removed or replaced while open).
  Status copy_up_data(const NodePtr& node, int data_fd);

  // Called when the daemon changed what getattr shows for a node behind the kernel's back (a
  // directory copied up becomes merged: its nlink changes): the adapter invalidates its cache.
  std::function<void(Node*)> on_attr_changed;
  // Called when a directory's listing changed behind the kernel's back (a d_ino changed): the
  // adapter drops the kernel's cached listing.
  std::function<void(Node*)> on_listing_changed;

 private:
  struct Location {  // how to reach a node's top object: (dirfd, name), name "" = dirfd itself
    NodePtr keep;    // holds the parent alive while the fd is used
    int dirfd = -1;
    std::string name;
    int layer = -1;
    // The parent's names_mu, shared, while (dirfd, name) is used: no rename, unlink or create
    // can put another object under the name meanwhile (the kernel does not lock the parent for
    // getattr, setattr, open or xattr requests).
    std::shared_lock<std::shared_mutex> names;
    UniqueFd owned;  // dirfd, when it was opened for this Location (a redirected metacopy's data)
  };
  // `hold_name`: take the parent's names lock (see Location). Callers that will take a names
  // lock themselves while the Location lives pass false; they must know the name is stable
  // (a lower object under its copy-up lock, or an inode the kernel has locked).
  // `for_data`: where the file's data is (differs from the top object for a metacopy file).
  Result<Location> locate(const NodePtr& node, bool hold_name = true, bool for_data = false) const;
  Status copy_up_impl(const NodePtr& node, bool with_data, bool metadata_only);
  // Copy the data of a metacopy file into its upper file, in place: the marker goes last, so a
  // crash before it leaves a file that still reads as the lower one (the kernel's order).
  Status complete_metacopy(const NodePtr& node, bool with_data, int data_fd = -1);
  // rename of a metacopy file: the redirect that keeps its data found from the new name ("" if
  // the path is too long for the kernel's redirect_max: then the data is copied instead).
  std::string metacopy_redirect_for(const NodePtr& node, const NodePtr& parent, std::string_view name) const;
  DirView view_of(const Node& dir) const;
  int upper_fd_of(const Node& dir) const;  // -1 if not in the upper
  Result<Entry> intern(const NodePtr& parent, std::string_view name, Resolution&& res,
                       const MetacopyData* data = nullptr);
  // lookup with parent->names_mu already held (shared or exclusive) by the caller.
  Result<Entry> lookup_locked(const NodePtr& parent, std::string_view name, int first_lower = 0);
  NodePtr node_of(const NodePtr& parent, std::string_view name, const Resolution& res) const;
  Status mark_dir_for_move(const NodePtr& dir, const NodePtr& new_parent, std::string_view new_name);
  Status ensure_writable() const;
  static std::mutex& copy_up_lock(const Node& node);
  Result<int> prepare_upper_parent(const NodePtr& parent);
  Status fix_owner(int dirfd, const char* name, const NodePtr& parent, Caller who, mode_t mode, bool is_link);
  template <class MakeFn>
  Result<Entry> create_object(const NodePtr& parent, std::string_view name, bool is_dir, Caller who,
                              mode_t mode, bool is_link, MakeFn make);
  Status require_empty_dir(const Resolution& dir) const;  // ENOTEMPTY if the merged dir shows entries
  Status remove_entry(const NodePtr& parent, std::string_view name, bool want_dir);
  Status clear_dir_in_upper(int upper_dirfd, const std::string& name);
  Status empty_upper_dir(int upper_dirfd, const std::string& name);
  Status whiteout_upper_entry(int upper_dirfd, const std::string& name);
  void detach_node_at(int upper_dirfd, const std::string& name, const Node* parent);
  void note_whiteout(const NodePtr& parent, std::string_view name, const char* how);

  std::unique_ptr<LayerStack> stack_;
  Tracer* tracer_;
  InodeTable table_;
  NodePtr root_;
  OverlayStats stats_;
  IdMap uid_map_, gid_map_;
};

}  // namespace strata
