// LayerStack::open and prepare_workdir: the checks a person sees at mount time, and the workdir
// lock and cleanup that make a crashed copy-up harmless.
#include <catch2/catch.hpp>

#include "layer_tree.h"
#include "strata/layers.h"

using strata::LayerStack;
using strata::MountOptions;
using test::make_dir;
using test::make_layers;
using test::options_for;

namespace {

std::string open_error(const MountOptions& opts) {
  auto r = LayerStack::open(opts);
  REQUIRE_FALSE(r.has_value());
  return r.error();
}

}  // namespace

TEST_CASE("LayerStack::open refuses bad layer lists with a message naming the path", "[layers]") {
  TempDir t;
  make_layers(t, 2);

  SECTION("no lowerdir") {
    MountOptions opts;
    CHECK_THAT(open_error(opts), Catch::Contains("lowerdir"));
  }
  SECTION("a lowerdir that does not exist") {
    MountOptions opts = options_for(t, 2);
    opts.lowerdirs[1] = t / "nonexistent";
    CHECK_THAT(open_error(opts), Catch::Contains(t / "nonexistent") && Catch::Contains("No such file"));
  }
  SECTION("a lowerdir that is a file") {
    test::write_file(t / "plain", "x");
    MountOptions opts = options_for(t, 2);
    opts.lowerdirs[0] = t / "plain";
    CHECK_THAT(open_error(opts), Catch::Contains(t / "plain") && Catch::Contains("Not a directory"));
  }
  SECTION("an upperdir that does not exist") {
    MountOptions opts = options_for(t, 1);
    opts.upperdir = t / "no-upper";
    CHECK_THAT(open_error(opts), Catch::Contains("upperdir") && Catch::Contains(t / "no-upper"));
  }
  SECTION("upperdir without workdir") {
    MountOptions opts = options_for(t, 1);
    opts.workdir.clear();
    CHECK_THAT(open_error(opts), Catch::Contains(t / "upper") && Catch::Contains("workdir"));
  }
  SECTION("workdir without upperdir") {
    MountOptions opts = options_for(t, 1, false);
    opts.workdir = t / "work";
    CHECK_THAT(open_error(opts), Catch::Contains(t / "work"));
  }
  SECTION("workdir inside upperdir") {
    make_dir(t / "upper/w");
    MountOptions opts = options_for(t, 1);
    opts.workdir = t / "upper/w";
    CHECK_THAT(open_error(opts), Catch::Contains(t / "upper/w") && Catch::Contains("inside"));
  }
  SECTION("workdir equal to upperdir") {
    MountOptions opts = options_for(t, 1);
    opts.workdir = t / "upper";
    CHECK_THAT(open_error(opts), Catch::Contains("inside"));
  }
  SECTION("upperdir inside workdir") {
    make_dir(t / "work/u");
    MountOptions opts = options_for(t, 1);
    opts.upperdir = t / "work/u";
    CHECK_THAT(open_error(opts), Catch::Contains(t / "work/u") && Catch::Contains("inside"));
  }
  // workdir on another filesystem than upperdir: needs a second filesystem (a tmpfs mount), which
  // a unit test does not make; the mounted tests cover it.
}

TEST_CASE("LayerStack::open numbers the layers upper first", "[layers]") {
  TempDir t;
  make_layers(t, 3);
  SECTION("writable") {
    auto r = LayerStack::open(options_for(t, 3));
    REQUIRE(r.has_value());
    const LayerStack& s = **r;
    CHECK(s.has_upper());
    CHECK(s.lower_count() == 3);
    CHECK(s.layer_count() == 4);
    CHECK(s.layer(0).path == t / "upper");
    CHECK(s.layer(1).path == t / "lower1");
    CHECK(s.layer(3).path == t / "lower3");
    CHECK(s.layer(2).index == 2);
    CHECK(s.workdir_path() == t / "work");
    // One filesystem: inode numbers show unchanged.
    struct stat st = test::lstat_of(t / "lower2");
    CHECK(s.presented_ino(st.st_dev, st.st_ino) == st.st_ino);
  }
  SECTION("read-only") {
    auto r = LayerStack::open(options_for(t, 2, false));
    REQUIRE(r.has_value());
    CHECK_FALSE((*r)->has_upper());
    CHECK((*r)->lower_count() == 2);
    CHECK((*r)->prepare_workdir().has_value());  // nothing to prepare
    CHECK((*r)->work_fd() < 0);
  }
}

TEST_CASE("prepare_workdir makes and cleans the staging dir and locks the workdir", "[layers]") {
  TempDir t;
  make_layers(t, 1);

  SECTION("creates workdir/work") {
    auto stack = test::open_stack(t, 1);
    struct stat st = test::lstat_of(t / "work/work");
    CHECK(S_ISDIR(st.st_mode));
    CHECK(stack->work_fd() >= 0);
    // Root on ext4/xfs/tmpfs: the markers go in trusted.*, whiteouts are char devices.
    CHECK(stack->xattr_prefix() == "trusted.");
    CHECK(stack->chardev_whiteouts());
    CHECK(test::names_in(t / "work/work").empty());  // the probe is gone
  }
  SECTION("removes leftovers of an interrupted copy-up") {
    test::write_file(t / "work/work/#copyup-1-0", "half a file");
    test::make_dir(t / "work/work/#rmdir-1-1/deep/deeper");
    test::write_file(t / "work/work/#rmdir-1-1/deep/deeper/f", "x");
    test::make_whiteout(t / "work/work/#whiteout-1-2");
    REQUIRE(::symlink("/etc/passwd", (t / "work/work/#link").c_str()) == 0);
    auto stack = test::open_stack(t, 1);
    CHECK(test::names_in(t / "work/work").empty());
    CHECK(test::exists(t / "upper"));
    CHECK(test::exists("/etc/passwd"));  // a symlink is removed, not followed
  }
  SECTION("a second stack on the same workdir is refused while the first lives") {
    auto first = test::open_stack(t, 1);
    auto second = LayerStack::open(options_for(t, 1));
    REQUIRE(second.has_value());
    auto r = (*second)->prepare_workdir();
    REQUIRE_FALSE(r.has_value());
    CHECK_THAT(r.error(), Catch::Contains(t / "work") && Catch::Contains("in use"));

    first.reset();  // the lock goes with the first stack's workdir fd
    CHECK((*second)->prepare_workdir().has_value());
  }
}
