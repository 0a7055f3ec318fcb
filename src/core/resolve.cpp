#include "strata/resolve.h"

#include <fcntl.h>
#include <limits.h>

#include "strata/sys.h"

namespace strata {

const char* describe(LayerVerdict::Kind kind) {
  switch (kind) {
    case LayerVerdict::Absent: return "not there";
    case LayerVerdict::Found: return "found";
    case LayerVerdict::Whiteout: return "whiteout";
    case LayerVerdict::AufsWhiteout: return "whiteout (.wh. file)";
    case LayerVerdict::Opaque: return "found, opaque: stops the search";
    case LayerVerdict::NotMerged: return "hidden by the directory above";
    case LayerVerdict::Redirect: return "found, redirected";
  }
  return "?";
}

Result<UniqueFd> open_dir_path(int root, const std::string& path) {
  auto cur = sys::openat(root, ".", O_RDONLY | O_DIRECTORY);
  if (!cur) return cur;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    std::string part = path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
    pos = slash == std::string::npos ? path.size() : slash + 1;
    if (part.empty() || part == ".") continue;
    // A redirect comes from an xattr in a layer: never let it climb out of the layer root (a NUL
    // would end the name early for openat: "..\0x" is "..").
    if (part == ".." || part.find('\0') != std::string::npos) return fail(EXDEV);
    auto next = sys::openat(cur->get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!next) return next;
    cur = std::move(next);
  }
  return cur;
}

bool valid_redirect(const std::string& target) {
  // An xattr value may hold NUL bytes: "..\0" is no "..", but the kernel's openat stops at the NUL.
  if (target.empty() || target.find('\0') != std::string::npos) return false;
  if (!target.starts_with('/')) return target.find('/') == std::string::npos && target != "." && target != "..";
  bool any = false;
  for (size_t pos = 1; pos <= target.size();) {
    size_t slash = std::min(target.find('/', pos), target.size());
    std::string_view part(target.data() + pos, slash - pos);
    if (part == "." || part == "..") return false;
    any |= !part.empty();
    pos = slash + 1;
  }
  return any;
}

namespace {

std::string join(const std::string& dir, std::string_view name) {
  std::string out = dir;
  if (!out.empty()) out += '/';
  out.append(name);
  return out;
}

struct Search {
  const LayerStack& stack;
  bool want_trail;
  Resolution res;

  void note(int layer, LayerVerdict::Kind kind, mode_t type = 0, std::string detail = {}) {
    if (want_trail) res.trail.push_back({layer, kind, type, std::move(detail)});
  }

  enum class Step { Continue, Stop };

  // One layer: `fd` is the directory to look `name` up in. Returns whether to go on below.
  Result<Step> visit(int layer, int fd, const AufsMarkerCache* markers, std::string_view name,
                     std::string* redirect_out) {
    std::string n(name);
    struct stat st;
    if (::fstatat(fd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      int err = errno;
      if (err != ENOENT && err != ENOTDIR) return fail(err);
      if (markers ? markers->hides(fd, name) : has_aufs_whiteout(fd, name)) {
        note(layer, LayerVerdict::AufsWhiteout);
        return Step::Stop;
      }
      note(layer, LayerVerdict::Absent);
      return Step::Continue;
    }
    if (is_whiteout(st)) {
      note(layer, LayerVerdict::Whiteout);
      return Step::Stop;
    }
    if (res.found && !S_ISDIR(st.st_mode)) {  // a non-dir below a merged dir is not merged
      note(layer, LayerVerdict::NotMerged, st.st_mode & S_IFMT);
      return Step::Stop;
    }
    if (!S_ISDIR(st.st_mode)) {
      res.found = true;
      res.st = st;
      res.layer = layer;
      note(layer, LayerVerdict::Found, st.st_mode & S_IFMT);
      return Step::Stop;
    }
    auto dir = sys::openat(fd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!dir) return fail(dir.error());
    DirMarkers dir_markers = read_dir_markers(dir->get());
    if (!res.found) {
      res.found = true;
      res.st = st;
      res.layer = layer;
    }
    res.dirs.push_back({layer, std::move(*dir), layer ? std::make_shared<AufsMarkerCache>() : nullptr});
    if (dir_markers.opaque != OpaqueKind::None) {
      res.opaque_layer = layer;
      note(layer, LayerVerdict::Opaque, S_IFDIR, describe(dir_markers.opaque));
      return Step::Stop;
    }
    if (!dir_markers.redirect.empty()) {
      note(layer, LayerVerdict::Redirect, S_IFDIR, dir_markers.redirect);
      *redirect_out = dir_markers.redirect;
    } else {
      note(layer, LayerVerdict::Found, S_IFDIR);
    }
    return Step::Continue;
  }
};

}  // namespace

Result<Resolution> resolve_child(const LayerStack& stack, const DirView& parent, std::string_view name,
                                 bool want_trail, int first_lower) {
  if (name.size() > NAME_MAX) return fail(ENAMETOOLONG);
  Search s{stack, want_trail, {}};
  if (is_aufs_marker_name(name)) return std::move(s.res);  // markers are never visible entries
  std::string lower_path = join(parent.lower_path, name);
  std::string redirect;
  size_t i = 0;
  // Phase 1: the parent's own layer fds, in order.
  for (; i < parent.layers.size(); ++i) {
    const auto& e = parent.layers[i];
    if (e.layer != 0 && e.layer < first_lower) continue;
    auto step = s.visit(e.layer, e.fd, e.markers, name, &redirect);
    if (!step) return fail(step.error());
    if (*step == Search::Step::Stop) break;
    if (!redirect.empty()) {
      ++i;
      break;
    }
  }
  // Phase 2: a redirect sends the rest of the lower search to another path, walked from the
  // layer roots (absolute) or beside the old name in the parent (relative).
  while (!redirect.empty() && s.res.found) {
    int from_layer = s.res.dirs.back().layer + 1;
    std::string target = redirect;
    redirect.clear();
    // A redirect comes from an xattr in a layer: it must not lead outside the layer or onto the
    // directory itself. Absolute: '/'-separated names without "." or ".."; relative: one name.
    if (!valid_redirect(target)) break;
    if (target.starts_with('/')) {
      lower_path = target.substr(1);
      for (int layer = from_layer; layer <= stack.lower_count(); ++layer) {
        size_t slash = lower_path.rfind('/');
        std::string dir_part = slash == std::string::npos ? "" : lower_path.substr(0, slash);
        std::string leaf = slash == std::string::npos ? lower_path : lower_path.substr(slash + 1);
        auto dirfd = open_dir_path(stack.layer(layer).root.get(), dir_part);
        if (!dirfd) {
          s.note(layer, LayerVerdict::Absent);
          continue;
        }
        auto step = s.visit(layer, dirfd->get(), nullptr, leaf, &redirect);
        if (!step) return fail(step.error());
        if (*step == Search::Step::Stop || !redirect.empty()) break;
      }
      i = parent.layers.size();
    } else {
      lower_path = join(parent.lower_path, target);
      for (; i < parent.layers.size(); ++i) {
        const auto& e = parent.layers[i];
        if (e.layer < from_layer) continue;
        auto step = s.visit(e.layer, e.fd, e.markers, target, &redirect);
        if (!step) return fail(step.error());
        if (*step == Search::Step::Stop) {
          i = parent.layers.size();
          break;
        }
        if (!redirect.empty()) {
          ++i;
          break;
        }
      }
    }
  }
  if (s.res.found && S_ISDIR(s.res.st.st_mode)) {
    s.res.lower_path = lower_path;
    s.res.merged = s.res.dirs.size() > 1;
  }
  return std::move(s.res);
}

Result<MetacopyData> resolve_metacopy_data(const LayerStack& stack, const DirView& parent, std::string_view name,
                                           std::string_view prefix) {
  DirView lowers = parent;
  const bool has_upper = !lowers.layers.empty() && lowers.layers.front().layer == 0;
  std::string redirect = has_upper ? read_redirect(lowers.layers.front().fd, std::string(name).c_str(), prefix) : "";
  if (has_upper) lowers.layers.erase(lowers.layers.begin());
  MetacopyData data;
  // A redirect comes from an xattr: followed only within the layers (no "..", no symlinks).
  if (!redirect.empty() && !valid_redirect(redirect)) return fail(EIO);
  if (redirect.starts_with('/')) {
    // Renamed: the data is at that path of the lower layers, the first regular file there.
    data.path = redirect.substr(redirect.find_first_not_of('/'));
    auto slash = data.path.rfind('/');
    std::string dir = slash == std::string::npos ? "" : data.path.substr(0, slash);
    std::string leaf = slash == std::string::npos ? data.path : data.path.substr(slash + 1);
    for (int layer = 1; layer <= stack.lower_count(); ++layer) {
      auto fd = open_dir_path(stack.layer(layer).root.get(), dir);
      if (!fd) continue;
      struct stat st;
      if (::fstatat(fd->get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (has_aufs_whiteout(fd->get(), leaf)) return fail(EIO);
        continue;
      }
      if (!S_ISREG(st.st_mode)) return fail(EIO);  // a whiteout or anything else hides the data
      data.layer = layer;
      data.st = st;
      return data;
    }
    return fail(EIO);
  }
  // The same name in the parent's lower directories; or the name a relative redirect gives
  // (the kernel's form for a rename within one directory).
  auto res = resolve_child(stack, lowers, redirect.empty() ? name : std::string_view(redirect), false);
  if (!res) return fail(res.error());
  // No regular file below to take the data from: the upper was changed by hand, or its lower
  // layers were. The kernel answers EIO too.
  if (!res->found || !S_ISREG(res->st.st_mode)) return fail(EIO);
  data.layer = res->layer;
  data.st = res->st;
  if (!redirect.empty()) data.path = parent.lower_path.empty() ? redirect : parent.lower_path + "/" + redirect;
  return data;
}

bool lower_has_name(const LayerStack& stack, const DirView& parent, std::string_view name) {
  DirView lowers;
  for (const auto& e : parent.layers)
    if (e.layer != 0) lowers.layers.push_back(e);
  lowers.lower_path = parent.lower_path;
  auto r = resolve_child(stack, lowers, name, false);
  return r && r->found;
}

Result<Resolution> resolve_root(const LayerStack& stack) {
  Search s{stack, false, {}};
  for (int layer = stack.has_upper() ? 0 : 1; layer < stack.layer_count(); ++layer) {
    int root = stack.layer(layer).root.get();
    auto st = sys::fstat(root);
    if (!st) return fail(st.error());
    auto fd = sys::openat(root, ".", O_RDONLY | O_DIRECTORY);
    if (!fd) return fail(fd.error());
    DirMarkers markers = read_dir_markers(fd->get());
    if (!s.res.found) {
      s.res.found = true;
      s.res.st = *st;
      s.res.layer = layer;
    }
    s.res.dirs.push_back({layer, std::move(*fd), layer ? std::make_shared<AufsMarkerCache>() : nullptr});
    if (markers.opaque != OpaqueKind::None) {
      s.res.opaque_layer = layer;
      break;
    }
  }
  s.res.merged = s.res.dirs.size() > 1;
  return std::move(s.res);
}

}  // namespace strata

