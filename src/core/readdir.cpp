#include "strata/readdir.h"

#include <dirent.h>
#include <fcntl.h>

#include <cstdlib>
#include <unordered_set>

#include "strata/copy_up.h"
#include "strata/sys.h"
#include "strata/whiteout.h"

namespace strata {

uint64_t presented_ino_of(const LayerStack& stack, int layer, int dirfd, const char* name,
                          const struct stat& st) {
  // Only the upper holds copies whose st_ino must stay that of their origin.
  if (layer == 0) {
    if (auto v = sys::getxattr(dirfd, name, ino_xattr_name(stack).c_str()); v && !v->empty()) {
      char* end = nullptr;
      uint64_t ino = std::strtoull(v->c_str(), &end, 10);
      if (*end == 0 && ino) return ino;
    }
  }
  return stack.presented_ino(st.st_dev, st.st_ino);
}

Result<std::vector<MergedEntry>> read_merged_dir(const LayerStack& stack, const DirView& dir,
                                                 bool stop_at_first) {
  std::vector<MergedEntry> out;
  std::unordered_set<std::string> seen;  // names decided by a layer above (shown or hidden)
  for (size_t li = 0; li < dir.layers.size(); ++li) {
    const auto& layer = dir.layers[li];
    const bool last_layer = li + 1 == dir.layers.size();
    // `.wh.NAME` hides NAME in the layers below only, not a NAME beside it in the same layer
    // (OCI image spec; lookup agrees): collect them and apply after this layer.
    std::vector<std::string> hidden_below;
    auto dup = sys::openat(layer.fd, ".", O_RDONLY | O_DIRECTORY);
    if (!dup) return fail(dup.error());
    auto dir_st = sys::fstat(dup->get());
    if (!dir_st) return fail(dir_st.error());
    DIR* stream = ::fdopendir(dup->release());
    if (!stream) return fail_errno();
    for (;;) {
      errno = 0;  // readdir reports errors only through errno; calls below may set it
      struct dirent* e = ::readdir(stream);
      if (!e) break;
      std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      if (is_aufs_marker_name(name)) {
        // `.wh.NAME` hides NAME in the layers below; `.wh..wh..opq` was handled by resolution.
        std::string_view hidden = name.substr(kAufsWhiteoutPrefix.size());
        if (!hidden.starts_with(".wh.")) hidden_below.emplace_back(hidden);
        continue;
      }
      std::string key(name);
      if (seen.contains(key)) continue;
      uint8_t type = e->d_type;
      struct stat st {};
      bool have_st = false;
      if (type == DT_UNKNOWN || type == DT_CHR) {
        if (::fstatat(layer.fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;  // vanished
        have_st = true;
        type = IFTODT(st.st_mode);
      }
      if (have_st && is_whiteout(st)) {
        if (!last_layer) seen.insert(std::move(key));
        continue;
      }
      uint64_t ino;
      if (layer.layer == 0) {
        if (!have_st) {
          st.st_dev = dir_st->st_dev;
          st.st_ino = e->d_ino;
        }
        ino = presented_ino_of(stack, 0, layer.fd, e->d_name, st);
      } else {
        ino = stack.presented_ino(have_st ? st.st_dev : dir_st->st_dev, have_st ? st.st_ino : e->d_ino);
      }
      out.push_back({key, type, ino, layer.layer});
      if (stop_at_first) {
        ::closedir(stream);
        return out;
      }
      if (!last_layer) seen.insert(std::move(key));
    }
    int err = errno;
    ::closedir(stream);
    if (err) return fail(err);
    for (auto& h : hidden_below) seen.insert(std::move(h));
  }
  return out;
}

}  // namespace strata
