// strata check: would these layers mount right under the kernel overlay?
//
// strata-fs reads more than the kernel does (aufs `.wh.` whiteouts, `.wh..wh..opq`, user.overlay.*
// without a mount option), and a rootless strata-fs writes `.wh.` files into its upper when it
// cannot create character devices. Each layer is checked against the layers below it (the stack it
// would sit on): a whiteout must hide something there, a redirect must point at a directory there.
//
// Problems (exit 1) change what the kernel shows; warnings are harmless to the merged view but
// point at something odd (a stray whiteout, a marker only strata-fs and fuse-overlayfs read in
// a lower layer).
#include <fmt/format.h>

#include <sys/sysmacros.h>

#include "strata/sys.h"
#include "strata/whiteout.h"
#include "tool.h"

namespace strata::tool {

namespace {

struct Finding {
  bool problem;
  int layer;
  std::string path;  // inside the layer, "/"-rooted
  std::string real;
  std::string what;
  std::string fix;
};

// Why nothing below can be hidden in a directory.
enum class Below { Merged, Opaque, Alone, Lowest };

class Checker {
 public:
  explicit Checker(const LayerStack& stack, const std::vector<std::string>& lowerdirs) : stack_(stack) {
    // The stack each layer sits on: for layer k, the lowers k+1..N (k = 0 is the upper).
    for (int k = 0; k < stack.layer_count(); ++k) {
      std::vector<std::string> rest;
      for (size_t i = size_t(k); i < lowerdirs.size(); ++i) rest.push_back(lowerdirs[i]);
      below_.push_back(open_lowers(rest));
    }
  }

  void check_layer(int k) {
    LayerStack* sub = below_[k].get();
    std::optional<Resolution> below;
    if (sub) {
      auto r = resolve_root(*sub);
      if (!r) die(fmt::format("check: {}: {}", printable(real_path(stack_, k + 1, "")), sys::errno_text(r.error())));
      below = std::move(*r);
    }
    int root = stack_.layer(k).root.get();
    DirInfo info = dir_markers(k, root, "", nullptr, sub);
    Below ctx = !sub ? Below::Lowest : info.opaque ? Below::Opaque : Below::Merged;
    walk(k, root, "", info.opaque ? nullptr : (below ? &*below : nullptr), ctx);
  }

  void check_namespaces() {
    if (user_markers_.empty()) return;
    if (!trusted_markers_.empty()) {
      const auto& [ul, up] = user_markers_.front();
      const auto& [tl, tp] = trusted_markers_.front();
      add(true, ul, up,
          fmt::format("user.overlay.* markers here{} and trusted.overlay.* markers elsewhere (e.g. {}): "
                      "the kernel overlay reads one namespace per mount, the other is ignored",
                      more(user_markers_.size() - 1), printable(real_path(stack_, tl, tp))),
          "write all markers in one namespace: trusted.overlay.* (root), or user.overlay.* and mount "
          "with -o userxattr");
    } else {
      const auto& [ul, up] = user_markers_.front();
      add(false, ul, up,
          fmt::format("user.overlay.* markers here{}: the kernel overlay reads them only when mounted "
                      "with -o userxattr",
                      more(user_markers_.size() - 1)),
          "mount the kernel overlay with -o userxattr (strata-fs reads both namespaces)");
    }
  }

  const std::vector<Finding>& findings() const { return findings_; }

  static std::string more(size_t n) { return n ? fmt::format(" (and {} more)", n) : ""; }

 private:
  struct DirInfo {
    bool opaque = false;
    std::optional<Resolution> redirected;  // the directory a valid redirect points at
  };

  void add(bool problem, int layer, const std::string& rel, std::string what, std::string fix) {
    findings_.push_back({problem, layer, "/" + rel, real_path(stack_, layer, rel), std::move(what), std::move(fix)});
  }

  static std::string stray_context(Below ctx, const std::string& name) {
    switch (ctx) {
      case Below::Merged: return fmt::format("no layer below has {}", printable(name));
      case Below::Opaque: return "it is in (or below) an opaque directory, which already hides everything below";
      case Below::Alone: return "it is in a directory that no layer below has";
      case Below::Lowest: return "nothing is below the lowest layer";
    }
    return "";
  }

  bool hides(LayerStack* sub, const Resolution* below, const std::string& name, const std::string& rel) {
    if (!sub || !below) return false;
    auto r = resolve_child(*sub, view_of(*below), name, false);
    if (!r) die(fmt::format("check: {}: {}", printable(rel), sys::errno_text(r.error())));
    return r->found;
  }

  // Opaque and redirect markers of the directory `fd` (at `rel` in layer k), checked.
  // `parent_below`: the directory of the stack below that holds this directory's siblings.
  DirInfo dir_markers(int k, int fd, const std::string& rel, const Resolution* parent_below, LayerStack* sub) {
    DirInfo info;
    auto names = sys::listxattr(fd, "");
    bool seen_redirect = false;
    std::string q = shell_quote(real_path(stack_, k, rel));
    if (names) {
      for (const auto& attr : *names) {
        bool user = attr.starts_with("user.overlay."), trusted = attr.starts_with("trusted.overlay.");
        if (!user && !trusted) continue;
        std::string field = attr.substr(attr.find("overlay.") + 8);
        if (field != "opaque" && field != "redirect") continue;
        (user ? user_markers_ : trusted_markers_).emplace_back(k, rel);
        auto v = sys::getxattr(fd, "", attr.c_str());
        if (!v) continue;
        if (field == "opaque") {
          if (*v == "y") {
            info.opaque = true;
          } else if (*v == "x") {
            add(false, k, rel,
                fmt::format("{}=x (a directory holding xattr whiteouts, kernel 6.7): strata-fs does not read "
                            "xattr whiteouts",
                            attr),
                "recreate the whiteouts inside as character devices 0/0");
          } else {
            add(false, k, rel, fmt::format("{}={}: ignored, only y makes a directory opaque", attr, printable(*v)),
                fmt::format("setfattr -n {} -v y {}  (or setfattr -x {} {})", attr, q, attr, q));
          }
        } else if (!seen_redirect) {
          seen_redirect = true;
          check_redirect(k, rel, attr, *v, parent_below, sub, info);
        }
      }
    }
    struct stat st;
    bool aufs_opaque = ::fstatat(fd, std::string(kAufsOpaqueMarker).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (aufs_opaque) info.opaque = true;  // honoured by strata-fs; reported where the marker is walked
    return info;
  }

  void check_redirect(int k, const std::string& rel, const std::string& attr, const std::string& target,
                      const Resolution* parent_below, LayerStack* sub, DirInfo& info) {
    std::string q = shell_quote(real_path(stack_, k, rel));
    std::string fix = fmt::format("point it at the directory in the lower layers this one was renamed from, "
                                  "or remove it: setfattr -x {} {}",
                                  attr, q);
    if (!sub) {
      add(true, k, rel, fmt::format("{}={}: no layer below to redirect to", attr, printable(target)), fix);
      return;
    }
    // A redirect is a path inside the layers: "." or ".." components would lead out of a layer
    // root (the kernel's lookup_one_len refuses them), and a relative one is a single name.
    bool climbs = false;
    for (size_t pos = 0; pos <= target.size();) {
      size_t slash = target.find('/', pos);
      if (slash == std::string::npos) slash = target.size();
      std::string_view part(target.data() + pos, slash - pos);
      if (part == "." || part == "..") climbs = true;
      pos = slash + 1;
    }
    if (climbs || (!target.starts_with('/') && target.find('/') != std::string::npos)) {
      add(true, k, rel,
          fmt::format("{}={}: malformed: a redirect is an absolute path inside the layers or one name "
                      "beside this directory, without . or .. components",
                      attr, printable(target)),
          fix);
      return;
    }
    std::optional<Resolution> dir;
    if (target.starts_with('/')) {
      auto root = resolve_root(*sub);
      if (!root) die(fmt::format("check: {}", sys::errno_text(root.error())));
      dir = std::move(*root);
      size_t pos = 0;
      bool any = false;
      while (dir && pos <= target.size()) {
        size_t slash = target.find('/', pos);
        if (slash == std::string::npos) slash = target.size();
        std::string part = target.substr(pos, slash - pos);
        pos = slash + 1;
        if (part.empty()) continue;
        any = true;
        auto r = resolve_child(*sub, view_of(*dir), part, false);
        if (!r || !r->found || !S_ISDIR(r->st.st_mode)) {
          dir.reset();
          break;
        }
        dir = std::move(*r);
      }
      if (!any) dir.reset();
    } else if (parent_below && target.find('/') == std::string::npos) {
      auto r = resolve_child(*sub, view_of(*parent_below), target, false);
      if (r && r->found && S_ISDIR(r->st.st_mode)) dir = std::move(*r);
    }
    if (!dir) {
      add(true, k, rel,
          fmt::format("{}={}: no such directory in the layers below, so nothing merges into this one", attr,
                      printable(target)),
          fix);
      return;
    }
    info.redirected = std::move(dir);
  }

  void walk(int k, int dirfd, const std::string& rel, const Resolution* below, Below ctx) {
    LayerStack* sub = below_[k].get();
    auto entries = list_dir(dirfd);
    if (!entries)
      die(fmt::format("check: {}: {}", printable(real_path(stack_, k, rel)), sys::errno_text(entries.error())));
    const bool upper = k == 0;
    for (const auto& e : *entries) {
      std::string path = join(rel, e.name);
      std::string q = shell_quote(real_path(stack_, k, path));
      if (e.name == kAufsOpaqueMarker) {
        bool has_xattr = false;
        if (auto names = sys::listxattr(dirfd, ""); names)
          for (const auto& a : *names)
            if (a == "trusted.overlay.opaque" || a == "user.overlay.opaque") has_xattr = true;
        std::string dq = shell_quote(real_path(stack_, k, rel));
        std::string fix = has_xattr ? fmt::format("rm -- {}  (the directory has an opaque xattr already)", q)
                                    : fmt::format("rm -- {} && setfattr -n trusted.overlay.opaque -v y {}", q, dq);
        if (upper)
          add(true, k, path,
              "opaque marker .wh..wh..opq in the upper layer: the kernel overlay shows it as a file and "
              "merges the directory with the ones below",
              fix);
        else if (!has_xattr)
          add(false, k, path,
              "opaque marker .wh..wh..opq: strata-fs and fuse-overlayfs honour it, the kernel overlay shows "
              "it as a file and merges the directory with the ones below",
              fix);
        continue;
      }
      if (is_aufs_marker_name(e.name)) {
        std::string target = e.name.substr(kAufsWhiteoutPrefix.size());
        std::string tq = shell_quote(real_path(stack_, k, join(rel, target)));
        struct stat st;
        bool beside = ::fstatat(dirfd, target.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
        bool hidden = hides(sub, below, target, path);
        if (upper) {
          std::string fix = beside   ? fmt::format("rm -- {}  ({} exists beside it)", q, printable(target))
                            : hidden ? fmt::format("rm -- {} && mknod {} c 0 0", q, tq)
                                     : fmt::format("rm -- {}  (nothing below to hide: {})", q,
                                                   stray_context(ctx, target));
          add(true, k, path,
              fmt::format(".wh. whiteout file in the upper layer: the kernel overlay shows it as a file and "
                          "does not hide {}",
                          printable(target)),
              fix);
        } else if (!hidden || beside) {
          add(false, k, path,
              fmt::format("stray .wh. whiteout: {}",
                          beside ? printable(target) + " exists beside it" : stray_context(ctx, target)),
              fmt::format("rm -- {}", q));
        } else {
          add(false, k, path,
              fmt::format(".wh. whiteout file: strata-fs and fuse-overlayfs honour it, the kernel overlay shows "
                          "it as a file and does not hide {}",
                          printable(target)),
              fmt::format("rm -- {} && mknod {} c 0 0", q, tq));
        }
        continue;
      }
      auto st = sys::fstatat(dirfd, e.name.c_str());
      if (!st) {
        if (st.error() == ENOENT) continue;
        die(fmt::format("check: {}: {}", printable(real_path(stack_, k, path)), sys::errno_text(st.error())));
      }
      if (S_ISCHR(st->st_mode)) {
        if (is_whiteout(*st)) {
          if (!hides(sub, below, e.name, path))
            add(false, k, path, fmt::format("stray whiteout: {}", stray_context(ctx, e.name)), fmt::format("rm -- {}", q));
        } else if (major(st->st_rdev) == 0) {
          add(true, k, path,
              fmt::format("character device 0:{}: not a whiteout (only 0:0 is), and no real device either: "
                          "the merged tree shows it as a device and hides nothing",
                          minor(st->st_rdev)),
              fmt::format("rm -- {} && mknod {} c 0 0  (if it was meant to delete {}; else just rm)", q, q,
                          printable(e.name)));
        }
        continue;
      }
      if (!S_ISDIR(st->st_mode)) {
        if (S_ISREG(st->st_mode)) check_file_markers(k, dirfd, e.name, path, sub, below);
        continue;
      }
      auto fd = sys::openat(dirfd, e.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      if (!fd) die(fmt::format("check: {}: {}", printable(real_path(stack_, k, path)), sys::errno_text(fd.error())));
      DirInfo info = dir_markers(k, fd->get(), path, below, sub);
      std::optional<Resolution> child_below;
      Below child_ctx = ctx;
      if (ctx == Below::Lowest) {
        // nothing below, whatever the markers say
      } else if (info.opaque) {
        child_ctx = Below::Opaque;
      } else if (info.redirected) {
        child_below = std::move(info.redirected);
        child_ctx = Below::Merged;
      } else if (below) {
        auto r = resolve_child(*sub, view_of(*below), e.name, false);
        if (!r) die(fmt::format("check: {}: {}", printable(real_path(stack_, k, path)), sys::errno_text(r.error())));
        if (r->found && S_ISDIR(r->st.st_mode)) child_below = std::move(*r);
        else child_ctx = Below::Alone;
      }
      walk(k, fd->get(), path, child_below ? &*child_below : nullptr, child_ctx);
    }
  }

  // Opaque and redirect markers mean nothing on a non-directory: say so. A metacopy marker needs
  // a regular file below to take the data from.
  void check_file_markers(int k, int dirfd, const std::string& name, const std::string& path, LayerStack* sub,
                          const Resolution* below) {
    auto names = sys::listxattr(dirfd, name.c_str());
    if (!names) return;
    for (const auto& attr : *names) {
      if (attr == "trusted.overlay.metacopy" || attr == "user.overlay.metacopy") {
        if (k > 0) {
          add(true, k, path,
              fmt::format("{} in a lower layer: strata-fs follows metacopy files of the upper only and shows "
                          "this one's own (sparse) content; the kernel with metacopy=on shows the data below",
                          attr),
              "make this layer from a mounted view (cp -a, tar) instead of from an upper directory");
          continue;
        }
        // Its data: by its name below, or where its redirect (a renamed metacopy) leads.
        bool data = false;
        if (sub) {
          DirView view = below ? view_of(*below) : DirView{};
          view.layers.insert(view.layers.begin(), DirView::Entry{0, dirfd});  // for its redirect
          data = bool(resolve_metacopy_data(*sub, view, name));
        }
        if (!data)
          add(true, k, path,
              fmt::format("{}: a metacopy file (attributes only) with no regular file below to hold its data: "
                          "strata-fs and the kernel answer EIO for it",
                          attr),
              fmt::format("rm -- {}  (its data is gone)", shell_quote(real_path(stack_, k, path))));
        continue;
      }
      const bool redirect = attr == "trusted.overlay.redirect" || attr == "user.overlay.redirect";
      if (attr != "trusted.overlay.opaque" && attr != "user.overlay.opaque" && !redirect) continue;
      if (redirect && has_metacopy(dirfd, name.c_str())) continue;  // a renamed metacopy's: checked above
      add(false, k, path, fmt::format("{} on a non-directory: ignored", attr),
          fmt::format("setfattr -x {} {}", attr, shell_quote(real_path(stack_, k, path))));
    }
  }

  const LayerStack& stack_;
  std::vector<std::unique_ptr<LayerStack>> below_;
  std::vector<Finding> findings_;
  std::vector<std::pair<int, std::string>> user_markers_, trusted_markers_;
};

}  // namespace

int run_check(const Args& args) {
  if (!args.operands.empty())
    die(fmt::format("check: '{}': unexpected argument (the layers are given with -o)", printable(args.operands[0])));
  auto stack = open_layers(args.opts);
  Checker checker(*stack, args.opts.lowerdirs);
  for (int k = stack->has_upper() ? 0 : 1; k < stack->layer_count(); ++k) checker.check_layer(k);
  checker.check_namespaces();
  const auto& findings = checker.findings();
  size_t problems = 0, warnings = 0;
  for (const auto& f : findings) (f.problem ? problems : warnings)++;
  int layers = stack->layer_count() - (stack->has_upper() ? 0 : 1);
  bool failed = problems > 0 || (args.strict && warnings > 0);

  if (args.json) {
    Json j;
    j.begin_object();
    j.field("ok", !failed).field("problems", uint64_t(problems)).field("warnings", uint64_t(warnings));
    j.key("layers").begin_array();
    for (int k = stack->has_upper() ? 0 : 1; k < stack->layer_count(); ++k) {
      j.begin_object();
      j.field("layer", k).field("role", role_of(k)).field("dir", stack->layer(k).path);
      j.end_object();
    }
    j.end_array();
    j.key("findings").begin_array();
    for (const auto& f : findings) {
      j.begin_object();
      j.field("severity", f.problem ? "problem" : "warning").field("layer", f.layer);
      j.field("role", role_of(f.layer)).field("path", f.path).field("real_path", f.real);
      j.field("what", f.what).field("fix", f.fix);
      j.end_object();
    }
    j.end_array();
    j.end_object();
    fmt::print("{}\n", j.str());
  } else {
    for (const auto& f : findings)
      fmt::print("{}: {}: {}; fix: {}\n", f.problem ? "problem" : "warning", printable(f.real), f.what, f.fix);
    if (findings.empty())
      fmt::print("clean: no problems in {} layer{}\n", layers, layers == 1 ? "" : "s");
    else
      fmt::print("{} problem{}, {} warning{} in {} layer{}\n", problems, problems == 1 ? "" : "s", warnings,
                 warnings == 1 ? "" : "s", layers, layers == 1 ? "" : "s");
  }
  return failed ? kExitNo : kExitOk;
}

}  // namespace strata::tool
