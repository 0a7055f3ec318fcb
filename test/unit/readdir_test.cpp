// read_merged_dir: each visible name once, from the topmost layer, with the d_type and d_ino a
// lookup of the same name would show.
#include <dirent.h>
#include <sys/sysmacros.h>

#include <catch2/catch.hpp>
#include <map>

#include "layer_tree.h"
#include "strata/readdir.h"

using strata::MergedEntry;
using strata::read_merged_dir;
using strata::resolve_root;
using test::make_dir;
using test::make_whiteout;
using test::set_xattr;
using test::write_file;

namespace {

std::map<std::string, MergedEntry> by_name(const std::vector<MergedEntry>& entries) {
  std::map<std::string, MergedEntry> out;
  for (const auto& e : entries) {
    INFO("duplicate entry " << e.name);
    CHECK(out.emplace(e.name, e).second);
  }
  return out;
}

std::vector<std::string> sorted_names(const std::vector<MergedEntry>& entries) {
  std::vector<std::string> out;
  for (const auto& e : entries) out.push_back(e.name);
  std::sort(out.begin(), out.end());
  return out;
}

// A tree with something of every kind: shadowed names, merged directories, whiteouts of both
// forms in the upper and in a lower, and every file type.
void build_tree(const TempDir& t) {
  test::make_layers(t, 2);
  write_file(t / "upper/top", "upper");
  write_file(t / "lower1/top", "lower1");
  write_file(t / "lower2/top", "lower2");
  write_file(t / "upper/d/u", "");
  write_file(t / "lower1/d/l1", "");
  write_file(t / "lower1/gone", "");
  make_whiteout(t / "upper/gone");
  write_file(t / "lower1/aufsgone", "");
  write_file(t / "upper/.wh.aufsgone", "");
  REQUIRE(::symlink("top", (t / "upper/link").c_str()) == 0);
  REQUIRE(::mkfifo((t / "upper/fifo").c_str(), 0644) == 0);
  REQUIRE(::mknod((t / "upper/chr").c_str(), S_IFCHR | 0600, makedev(1, 7)) == 0);
  write_file(t / "lower1/l1only", "");
  make_dir(t / "lower1/ldir");
  write_file(t / "lower2/ldir/l2", "");
  make_whiteout(t / "lower1/gone2");
  write_file(t / "lower2/gone2", "");
  write_file(t / "lower1/.wh.aufs2", "");
  write_file(t / "lower2/aufs2", "");
  write_file(t / "lower2/l2only", "");
  // An opaque directory over a lower one, and a merged one whose entries are all whited out.
  write_file(t / "upper/op/mine", "");
  set_xattr(t / "upper/op", "trusted.overlay.opaque", "y");
  write_file(t / "lower1/op/theirs", "");
  make_whiteout(t / "upper/empty/a");
  write_file(t / "upper/empty/.wh.b", "");
  write_file(t / "lower1/empty/a", "");
  write_file(t / "lower2/empty/b", "");
}

}  // namespace

TEST_CASE("read_merged_dir merges the layers of a directory", "[readdir]") {
  TempDir t;
  build_tree(t);
  auto ov = test::open_overlay(t, 2);
  const auto& stack = ov->stack();
  auto root = resolve_root(stack);
  REQUIRE(root.has_value());
  auto listed = read_merged_dir(stack, test::view_of(*root));
  REQUIRE_OK(listed);
  auto entries = by_name(*listed);

  CHECK(sorted_names(*listed) == std::vector<std::string>{"chr", "d", "empty", "fifo", "l1only", "l2only",
                                                          "ldir", "link", "op", "top"});
  SECTION("the topmost layer wins") {
    CHECK(entries.at("top").layer == 0);
    CHECK(entries.at("d").layer == 0);
    CHECK(entries.at("l1only").layer == 1);
    CHECK(entries.at("ldir").layer == 1);
    CHECK(entries.at("l2only").layer == 2);
  }
  SECTION("d_type") {
    CHECK(entries.at("top").d_type == DT_REG);
    CHECK(entries.at("d").d_type == DT_DIR);
    CHECK(entries.at("ldir").d_type == DT_DIR);
    CHECK(entries.at("link").d_type == DT_LNK);
    CHECK(entries.at("fifo").d_type == DT_FIFO);
    CHECK(entries.at("chr").d_type == DT_CHR);  // a real device, not a whiteout
  }
  SECTION("d_ino is the st_ino of the object of that layer") {
    CHECK(entries.at("top").ino == test::lstat_of(t / "upper/top").st_ino);
    CHECK(entries.at("l1only").ino == test::lstat_of(t / "lower1/l1only").st_ino);
    CHECK(entries.at("ldir").ino == test::lstat_of(t / "lower1/ldir").st_ino);
    CHECK(entries.at("l2only").ino == test::lstat_of(t / "lower2/l2only").st_ino);
    for (const auto& e : *listed) {
      INFO(e.name);
      int layer_root = stack.layer(e.layer).root.get();
      struct stat st = test::lstat_of(stack.layer(e.layer).path + "/" + e.name);
      CHECK(e.ino == strata::presented_ino_of(stack, e.layer, layer_root, e.name.c_str(), st));
    }
  }
  SECTION("d_ino equals the st_ino that Overlay::lookup gives") {
    for (const auto& e : *listed) {
      INFO(e.name);
      auto found = ov->lookup(ov->root(), e.name);
      REQUIRE_OK(found);
      CHECK(found->attr.st_ino == e.ino);
      CHECK(IFTODT(found->attr.st_mode) == e.d_type);
    }
  }
  SECTION("an opaque directory lists only its own layer") {
    auto op = strata::resolve_child(stack, test::view_of(*root), "op", false);
    REQUIRE_OK(op);
    auto inside = read_merged_dir(stack, test::view_of(*op));
    REQUIRE_OK(inside);
    CHECK(sorted_names(*inside) == std::vector<std::string>{"mine"});
  }
  SECTION("a merged directory's entries from all its layers") {
    auto d = strata::resolve_child(stack, test::view_of(*root), "ldir", false);
    REQUIRE_OK(d);
    auto inside = read_merged_dir(stack, test::view_of(*d));
    REQUIRE_OK(inside);
    CHECK(sorted_names(*inside) == std::vector<std::string>{"l2"});
    CHECK(inside->front().layer == 2);
  }
  SECTION("stop_at_first") {
    auto first = read_merged_dir(stack, test::view_of(*root), true);
    REQUIRE_OK(first);
    CHECK(first->size() == 1);
    auto empty = strata::resolve_child(stack, test::view_of(*root), "empty", false);
    REQUIRE_OK(empty);
    REQUIRE(empty->dirs.size() == 3);
    auto none = read_merged_dir(stack, test::view_of(*empty), true);
    REQUIRE_OK(none);
    CHECK(none->empty());
    auto all = read_merged_dir(stack, test::view_of(*empty));
    REQUIRE_OK(all);
    CHECK(all->empty());
  }
}

TEST_CASE("readdir d_ino survives copy-up and matches lookup", "[readdir][copyup]") {
  TempDir t;
  test::make_layers(t, 1);
  write_file(t / "lower1/f", "data");
  write_file(t / "lower1/sub/g", "data");
  const ino_t lower_f = test::lstat_of(t / "lower1/f").st_ino;
  const ino_t lower_sub = test::lstat_of(t / "lower1/sub").st_ino;
  auto ov = test::open_overlay(t, 1);
  auto f = ov->lookup(ov->root(), "f");
  REQUIRE_OK(f);
  REQUIRE_OK(ov->open(f->node, O_WRONLY));
  auto g = test::walk(*ov, "sub/g");
  REQUIRE_OK(g);
  REQUIRE_OK(ov->open(g->node, O_RDWR));  // copies sub up too
  REQUIRE(test::exists(t / "upper/f"));
  REQUIRE(test::exists(t / "upper/sub/g"));

  auto listed = ov->read_dir(ov->root());
  REQUIRE_OK(listed);
  auto entries = by_name(*listed);
  CHECK(entries.at("f").layer == 0);
  CHECK(entries.at("f").ino == lower_f);
  CHECK(entries.at("sub").layer == 0);
  CHECK(entries.at("sub").ino == lower_sub);
  CHECK(f->attr.st_ino == lower_f);
}

TEST_CASE("readdir agrees with lookup when a layer has both NAME and .wh.NAME", "[readdir][whiteout]") {
  // OCI image layers: a whiteout file hides only the layers below its own, so a layer that has
  // both `.wh.NAME` and `NAME` shows NAME. Whatever the rule, readdir and lookup must agree; a
  // dozen names make sure some marker comes before its name in the directory's hash order.
  TempDir t;
  test::make_layers(t, 2);
  std::vector<std::string> names;
  for (int i = 0; i < 12; ++i) {
    std::string name = "n" + std::to_string(i);
    names.push_back(name);
    write_file(t / ("lower1/" + name), "same layer");
    write_file(t / ("lower1/.wh." + name), "");
    write_file(t / ("lower2/" + name), "below");
  }
  auto ov = test::open_overlay(t, 2);
  auto listed = ov->read_dir(ov->root());
  REQUIRE_OK(listed);
  auto entries = by_name(*listed);
  for (const auto& name : names) {
    INFO(name);
    auto found = ov->lookup(ov->root(), name);
    CHECK(entries.contains(name) == found.has_value());
  }
}
