// strata du: what sharing the lowers saves, for several uppers over the same lowers (the
// containers of one image).
//
// Counted as du(1) counts: every inode once (hard links, and the same file reached through two
// layers), each directory's own size included; "disk" is st_blocks * 512, "apparent" st_size.
// The lowers are counted once, together; each upper counts only the inodes the lowers do not
// have. Full copies would have cost every container its own lowers: N x lowers + the private parts.
#include <fmt/format.h>

#include <set>

#include "strata/sys.h"
#include "tool.h"

namespace strata::tool {

namespace {

struct Usage {
  uint64_t disk = 0;
  uint64_t apparent = 0;
  uint64_t inodes = 0;
  uint64_t metacopy_files = 0;  // uppers: attribute-only copies, whose data the lowers hold
};

using InodeSet = std::set<std::pair<dev_t, ino_t>>;

class Counter {
 public:
  // Count the tree at `dirfd` (the directory itself included) into `usage`, skipping inodes in
  // `seen` (and adding the new ones to it) and those in `shared`.
  void count_tree(int dirfd, const std::string& shown, const struct stat& st, InodeSet& seen,
                  const InodeSet* shared, Usage& usage) {
    add(st, seen, shared, usage);
    auto entries = list_dir(dirfd);
    if (!entries) die(fmt::format("du: {}: {}", printable(shown), sys::errno_text(entries.error())));
    for (const auto& e : *entries) {
      std::string child = join(shown, e.name);
      auto cst = sys::fstatat(dirfd, e.name.c_str());
      if (!cst) {
        if (cst.error() == ENOENT) continue;  // removed while we looked
        die(fmt::format("du: {}: {}", printable(child), sys::errno_text(cst.error())));
      }
      if (!S_ISDIR(cst->st_mode)) {
        // In an upper, a metacopy file's size is the lower file's data: not private bytes.
        const bool metacopy = shared && S_ISREG(cst->st_mode) && has_metacopy(dirfd, e.name.c_str());
        add(*cst, seen, shared, usage, metacopy);
        continue;
      }
      auto fd = sys::openat(dirfd, e.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      if (!fd) die(fmt::format("du: {}: {}", printable(child), sys::errno_text(fd.error())));
      count_tree(fd->get(), child, *cst, seen, shared, usage);
    }
  }

 private:
  static void add(const struct stat& st, InodeSet& seen, const InodeSet* shared, Usage& usage,
                  bool metacopy = false) {
    std::pair key{st.st_dev, st.st_ino};
    if (shared && shared->contains(key)) return;
    if (!seen.insert(key).second) return;
    usage.disk += uint64_t(st.st_blocks) * 512;
    if (metacopy) ++usage.metacopy_files;
    else usage.apparent += uint64_t(st.st_size);
    ++usage.inodes;
  }
};

double percent(uint64_t part, uint64_t whole) { return whole ? 100.0 * double(part) / double(whole) : 0.0; }

}  // namespace

int run_du(const Args& args) {
  std::vector<std::string> uppers;
  if (!args.opts.upperdir.empty()) uppers.push_back(args.opts.upperdir);
  uppers.insert(uppers.end(), args.operands.begin(), args.operands.end());
  if (uppers.empty()) die("du: UPPER missing (usage: strata du -o lowerdir=DIR[:DIR...] UPPER...)");
  MountOptions lower_opts;
  lower_opts.lowerdirs = args.opts.lowerdirs;
  auto lowers = open_layers(lower_opts);  // checks the lowers, with strata-fs's messages
  std::vector<UniqueFd> upper_fds;
  for (const auto& u : uppers) {
    if (u.empty()) die("upperdir '': empty path");
    auto fd = sys::openat(AT_FDCWD, u.c_str(), O_RDONLY | O_DIRECTORY);
    if (!fd) die(fmt::format("upperdir {}: {}", printable(u), sys::errno_text(fd.error())));
    upper_fds.push_back(std::move(*fd));
  }

  Counter counter;
  InodeSet lower_inodes;
  Usage lower_usage;
  for (int l = 1; l < lowers->layer_count(); ++l) {
    const Layer& layer = lowers->layer(l);
    auto st = sys::fstat(layer.root.get());
    if (!st) die(fmt::format("lowerdir {}: {}", printable(layer.path), sys::errno_text(st.error())));
    counter.count_tree(layer.root.get(), layer.path, *st, lower_inodes, nullptr, lower_usage);
  }
  std::vector<Usage> upper_usage(uppers.size());
  for (size_t i = 0; i < uppers.size(); ++i) {
    auto st = sys::fstat(upper_fds[i].get());
    if (!st) die(fmt::format("upperdir {}: {}", printable(uppers[i]), sys::errno_text(st.error())));
    InodeSet seen;  // each upper on its own, as if it were the only one
    counter.count_tree(upper_fds[i].get(), uppers[i], *st, seen, &lower_inodes, upper_usage[i]);
  }

  Usage priv, total, full;
  for (const auto& u : upper_usage) {
    priv.disk += u.disk;
    priv.apparent += u.apparent;
  }
  const uint64_t n = uppers.size();
  total.disk = lower_usage.disk + priv.disk;
  total.apparent = lower_usage.apparent + priv.apparent;
  full.disk = n * lower_usage.disk + priv.disk;
  full.apparent = n * lower_usage.apparent + priv.apparent;
  const uint64_t save_disk = full.disk - total.disk, save_apparent = full.apparent - total.apparent;

  if (args.json) {
    Json j;
    j.begin_object();
    j.key("lowers").begin_object();
    j.key("dirs").begin_array();
    for (int l = 1; l < lowers->layer_count(); ++l) j.value(lowers->layer(l).path);
    j.end_array();
    j.field("disk_bytes", lower_usage.disk).field("apparent_bytes", lower_usage.apparent);
    j.field("inodes", lower_usage.inodes);
    j.end_object();
    j.key("uppers").begin_array();
    for (size_t i = 0; i < uppers.size(); ++i) {
      j.begin_object();
      j.field("dir", uppers[i]).field("disk_bytes", upper_usage[i].disk);
      j.field("apparent_bytes", upper_usage[i].apparent).field("inodes", upper_usage[i].inodes);
      j.field("metacopy_files", upper_usage[i].metacopy_files);
      j.end_object();
    }
    j.end_array();
    j.key("total").begin_object();
    j.field("disk_bytes", total.disk).field("apparent_bytes", total.apparent).end_object();
    j.key("full_copies").begin_object();
    j.field("count", n).field("disk_bytes", full.disk).field("apparent_bytes", full.apparent).end_object();
    j.key("saving").begin_object();
    j.field("disk_bytes", save_disk).field("apparent_bytes", save_apparent);
    j.field("disk_percent", percent(save_disk, full.disk));
    j.field("apparent_percent", percent(save_apparent, full.apparent));
    j.end_object();
    j.end_object();
    fmt::print("{}\n", j.str());
    return kExitOk;
  }

  auto size = [&](uint64_t b) { return args.bytes ? std::to_string(b) : human_size(b); };
  auto row = [&](uint64_t disk, uint64_t apparent, const std::string& what) {
    fmt::print("{:>12}  {:>12}  {}\n", size(disk), size(apparent), what);
  };
  fmt::print("{:>12}  {:>12}\n", "on disk", "apparent");
  std::vector<std::string> lower_names;
  for (int l = 1; l < lowers->layer_count(); ++l) lower_names.push_back(printable(lowers->layer(l).path));
  row(lower_usage.disk, lower_usage.apparent,
      fmt::format("lowers, shared, counted once: {}", fmt::join(lower_names, ":")));
  for (size_t i = 0; i < uppers.size(); ++i) {
    const uint64_t mc = upper_usage[i].metacopy_files;
    row(upper_usage[i].disk, upper_usage[i].apparent,
        fmt::format("private to upper {}{}", printable(uppers[i]),
                    mc ? fmt::format(" ({} metacopy file{}: attributes only, the data stays shared)", mc,
                                     mc == 1 ? "" : "s")
                       : ""));
  }
  row(total.disk, total.apparent, "total");
  row(full.disk, full.apparent, fmt::format("as {} full cop{} ({} x lowers + private)", n, n == 1 ? "y" : "ies", n));
  row(save_disk, save_apparent,
      fmt::format("saved: {:.1f}% on disk, {:.1f}% apparent", percent(save_disk, full.disk),
                  percent(save_apparent, full.apparent)));
  return kExitOk;
}

}  // namespace strata::tool
