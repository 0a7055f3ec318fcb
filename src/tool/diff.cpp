// strata diff: what the upper layer changed against the lowers, as docker diff shows it.
//
// Two merged trees are compared: the whole stack (upper over lowers) and the lowers alone (the
// image). Both are read through the core's resolve_child and read_merged_dir, so whiteouts of
// either form, opaque directories of any kind and redirects mean here what they mean on the
// mount. Only directories the upper takes part in are walked (plus, below a redirect, the
// directories whose lower part moved): the rest of the image is unchanged by construction.
//
//   A  in the merged tree, not in the lowers (every entry of an added directory is listed)
//   C  in both, but the merged one comes from the upper: copied up, replaced, or a directory
//      whose entries changed
//   D  in the lowers, gone from the merged tree (a whiteout, or hidden by an opaque directory)
#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "strata/readdir.h"
#include "strata/sys.h"
#include "tool.h"

namespace strata::tool {

namespace {

struct Change {
  std::string path;
  char kind;  // 'A', 'C', 'D'
  mode_t type;
};

std::string child_path(const std::string& parent, const std::string& name) {
  return parent == "/" ? "/" + name : parent + "/" + name;
}

class Differ {
 public:
  Differ(const LayerStack& full, const LayerStack& lowers) : full_(full), lowers_(lowers) {}

  // `merged`: the directory `path` in the whole stack; `image`: the same path in the lowers
  // alone, or null when the lowers have no directory there.
  void walk(const std::string& path, const Resolution& merged, const Resolution* image) {
    auto merged_entries = read_merged_dir(full_, view_of(merged));
    if (!merged_entries) fail_at(path, merged_entries.error());
    std::map<std::string, MergedEntry> now, before;
    for (auto& e : *merged_entries) now.emplace(e.name, e);
    if (image) {
      auto image_entries = read_merged_dir(lowers_, view_of(*image));
      if (!image_entries) fail_at(path, image_entries.error());
      for (auto& e : *image_entries) before.emplace(e.name, e);
    }
    // A redirect above moved where this directory's lower part comes from: an entry that is
    // not in the upper may still be another object than the image's one of the same name.
    bool moved = image && merged.lower_path != image->lower_path;

    for (const auto& [name, e] : now) {
      std::string child = child_path(path, name);
      auto old = before.find(name);
      if (old == before.end()) {
        changes_.push_back({child, 'A', type_of_dtype(e.d_type)});
        if (e.d_type == DT_DIR) added_tree(child, resolve(full_, merged, name, child));
        continue;
      }
      bool changed = e.layer == 0;
      if (!changed && moved) {
        auto a = resolve(full_, merged, name, child);
        auto b = resolve(lowers_, *image, name, child);
        changed = a.st.st_dev != b.st.st_dev || a.st.st_ino != b.st.st_ino;
      }
      if (changed) changes_.push_back({child, 'C', type_of_dtype(e.d_type)});
      if (e.d_type != DT_DIR || !(changed || moved)) continue;
      Resolution child_merged = resolve(full_, merged, name, child);
      if (old->second.d_type == DT_DIR) {
        Resolution child_image = resolve(lowers_, *image, name, child);
        walk(child, child_merged, &child_image);
      } else {
        walk(child, child_merged, nullptr);  // a file replaced by a directory: all of it is new
      }
    }
    for (const auto& [name, e] : before)
      if (!now.contains(name)) changes_.push_back({child_path(path, name), 'D', type_of_dtype(e.d_type)});
  }

  std::vector<Change> take() {
    std::sort(changes_.begin(), changes_.end(), [](const Change& a, const Change& b) { return a.path < b.path; });
    return std::move(changes_);
  }

 private:
  // Every entry below a directory the lowers do not have is added (a redirected directory's
  // entries too: they come from elsewhere in the lowers, but are new at this path).
  void added_tree(const std::string& path, const Resolution& dir) {
    auto entries = read_merged_dir(full_, view_of(dir));
    if (!entries) fail_at(path, entries.error());
    for (const auto& e : *entries) {
      std::string child = child_path(path, e.name);
      changes_.push_back({child, 'A', type_of_dtype(e.d_type)});
      if (e.d_type == DT_DIR) added_tree(child, resolve(full_, dir, e.name, child));
    }
  }

  Resolution resolve(const LayerStack& stack, const Resolution& dir, const std::string& name,
                     const std::string& path) {
    auto r = resolve_child(stack, view_of(dir), name, false);
    if (!r) fail_at(path, r.error());
    if (!r->found) fail_at(path, ENOENT);  // vanished between readdir and lookup
    return std::move(*r);
  }

  [[noreturn]] void fail_at(const std::string& path, int err) {
    die(fmt::format("diff: {}: {}", printable(path), sys::errno_text(err)));
  }

  const LayerStack& full_;
  const LayerStack& lowers_;
  std::vector<Change> changes_;
};

}  // namespace

int run_diff(const Args& args) {
  if (!args.operands.empty())
    die(fmt::format("diff: '{}': unexpected argument (the layers are given with -o)", printable(args.operands[0])));
  if (args.opts.upperdir.empty())
    die("upperdir: missing: strata diff compares an upper layer with its lowers "
        "(-o lowerdir=DIR[:DIR...],upperdir=DIR)");
  auto full = open_layers(args.opts);
  auto lowers = open_lowers(args.opts.lowerdirs);

  auto merged_root = resolve_root(*full);
  if (!merged_root) die(fmt::format("diff: /: {}", sys::errno_text(merged_root.error())));
  auto image_root = resolve_root(*lowers);
  if (!image_root) die(fmt::format("diff: /: {}", sys::errno_text(image_root.error())));
  Differ differ(*full, *lowers);
  differ.walk("/", *merged_root, &*image_root);
  auto changes = differ.take();

  if (args.json) {
    Json j;
    j.begin_array();
    for (const auto& c : changes) {
      j.begin_object();
      j.field("path", c.path).field("kind", std::string(1, c.kind)).field("type", type_key(c.type));
      j.end_object();
    }
    j.end_array();
    fmt::print("{}\n", j.str());
  } else {
    for (const auto& c : changes) fmt::print("{} {}\n", c.kind, printable(c.path));
  }
  return kExitOk;
}

}  // namespace strata::tool
