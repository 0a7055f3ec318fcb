// Union lookup: which layer answers for a name in a merged directory, following the kernel
// overlayfs rules (Documentation/filesystems/overlayfs.rst): upper first, then the lowers top to
// bottom; a whiteout hides the name below it; a non-directory hides everything below it; a
// directory merges with the directories of the same name below, until one that is opaque;
// a redirect (renamed merged directory) sends the lower search to another path.
//
// Each step is one fstatat of a single name relative to a layer directory fd, never following
// symlinks, so nothing in a layer can lead the daemon outside it.
#pragma once
#include <sys/stat.h>

#include <string>
#include <string_view>
#include <vector>

#include "strata/layers.h"
#include "strata/node.h"
#include "strata/result.h"
#include "strata/whiteout.h"

namespace strata {

// A merged directory's layers as plain fds (borrowed from its Node for the call).
struct DirView {
  struct Entry {
    int layer;
    int fd;
    const AufsMarkerCache* markers = nullptr;
  };
  std::vector<Entry> layers;  // upper first
  std::string lower_path;
};

// What happened at one layer: the story `strata which` and the lookup trace tell.
struct LayerVerdict {
  enum Kind {
    Absent,          // no such name in this layer
    Found,           // the answer (or a directory that merges)
    Whiteout,        // a char-device whiteout hides the name here and below
    AufsWhiteout,    // a .wh.NAME file hides it
    Opaque,          // found a directory that is opaque: nothing below is merged
    NotMerged,       // a non-directory below a directory: ignored
    Redirect,        // found a directory whose lower part lives elsewhere
  };
  int layer;
  Kind kind;
  mode_t type = 0;
  std::string detail;  // opaque kind, redirect target
};
const char* describe(LayerVerdict::Kind kind);

struct Resolution {
  bool found = false;
  struct stat st {};           // the top object
  int layer = -1;              // its layer
  std::vector<DirLayer> dirs;  // directories: an fd per contributing layer, upper first
  std::string lower_path;      // directories: their path in the lower layers
  bool merged = false;         // directory with more than one contributing layer
  int opaque_layer = -1;       // directories: the layer whose opaque marker cut the merge
  std::vector<LayerVerdict> trail;  // filled only when asked for
};

// Resolve `name` in the merged directory `parent`. ENOENT is a normal answer (found=false,
// and the trail says why); real errors (EACCES, ENAMETOOLONG, EIO) are returned as errors.
// `first_lower` (a hint from a merged readdir that saw the name first in that lower layer) skips
// the lower layers above it; the upper is always asked, since it may have changed since.
Result<Resolution> resolve_child(const LayerStack& stack, const DirView& parent,
                                 std::string_view name, bool want_trail, int first_lower = 0);

// Does `name` exist (not whited out) in any lower layer of `parent`, i.e. does removing it from
// the upper need a whiteout?
bool lower_has_name(const LayerStack& stack, const DirView& parent, std::string_view name);

// The root of the merged tree.
Result<Resolution> resolve_root(const LayerStack& stack);

// Where the data of a metacopy file of the upper (`name` in `parent`, attributes only) is: the
// first regular file of that name in the lower layers, or where the file's redirect (set when it
// was renamed) leads. EIO when there is none: the upper was changed by hand, or its lowers were.
struct MetacopyData {
  int layer = -1;
  struct stat st {};
  std::string path;  // from the layer roots, when a redirect sent the search elsewhere
};
// `prefix`: the namespace its redirect is read from (see has_metacopy); empty: either.
Result<MetacopyData> resolve_metacopy_data(const LayerStack& stack, const DirView& parent, std::string_view name,
                                           std::string_view prefix = {});

// Walk `path` (relative, '/'-separated) from a layer root one directory at a time, never
// following a symlink and never above the root ("..": EXDEV).
Result<UniqueFd> open_dir_path(int root, const std::string& path);
// Whether a redirect value read from a layer may be followed: absolute, '/'-separated names
// without "." or ".."; or relative, a single name.
bool valid_redirect(const std::string& target);

}  // namespace strata
