// Metadata-only copy-up (metacopy=on): what a chmod leaves in the upper (the kernel overlay's
// format), where reads go, and how the data follows on the first write: in place, attributes
// kept, the marker removed last, nothing half-done visible when the copy fails.
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <random>

#include "layer_tree.h"
#include "strata/copy_up.h"
#include "strata/overlay.h"

using strata::AttrChange;
using strata::Overlay;
using strata::UniqueFd;
using test::errname;
using test::exists;
using test::lstat_of;
using test::walk;
using test::write_file;

namespace {

constexpr const char* kMarker = "trusted.overlay.metacopy";

std::unique_ptr<Overlay> open_with_metacopy(const TempDir& t, bool metacopy) {
  auto opts = test::options_for(t, 1);
  opts.metacopy = metacopy;
  auto stack = strata::LayerStack::open(opts);
  INFO((stack ? std::string() : stack.error()));
  REQUIRE(stack.has_value());
  auto prepared = (*stack)->prepare_workdir();
  REQUIRE(prepared.has_value());
  auto ov = std::make_unique<Overlay>(std::move(*stack), nullptr);
  REQUIRE_OK(ov->init());
  return ov;
}

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = char(gen());
  return out;
}

std::string read_through(Overlay& ov, const strata::NodePtr& node) {
  auto fd = ov.open(node, O_RDONLY);
  REQUIRE_OK(fd);
  return test::read_fd(fd->get());
}

// Whether the file holds any data block (a metacopy file is one hole).
bool has_data(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  REQUIRE(fd);
  return ::lseek(fd.get(), 0, SEEK_DATA) >= 0;
}

AttrChange chmod_to(mode_t mode) {
  AttrChange c;
  c.mode = true;
  c.values.st_mode = mode;
  return c;
}

struct FaultHookReset {
  ~FaultHookReset() { strata::set_copy_fault_hook(nullptr); }
};

}  // namespace

TEST_CASE("metacopy=on: chmod of a lower file copies its attributes, not its data", "[metacopy]") {
  TempDir t;
  test::make_layers(t, 1);
  const std::string data = random_bytes(100000, 1);
  write_file(t / "lower1/f", data, 0644);
  auto ov = open_with_metacopy(t, true);
  auto f = walk(*ov, "f");
  REQUIRE_OK(f);

  REQUIRE_OK(ov->setattr(f->node, chmod_to(0600), -1));
  const auto up = lstat_of(t / "upper/f");
  CHECK((up.st_mode & 07777) == 0600);
  CHECK(up.st_size == 100000);
  CHECK(test::get_xattr(t / "upper/f", kMarker).has_value());
  CHECK_FALSE(has_data(t / "upper/f"));
  CHECK(ov->in_upper(*f->node));
  CHECK_FALSE(ov->data_in_upper(*f->node));
  CHECK(read_through(*ov, f->node) == data);
  auto st = ov->getattr(f->node);
  REQUIRE_OK(st);
  CHECK((st->st_mode & 07777) == 0600);
  CHECK(st->st_blocks == lstat_of(t / "lower1/f").st_blocks);  // the data's blocks, as the kernel
  auto names = ov->listxattr(f->node);
  REQUIRE_OK(names);
  CHECK(std::find(names->begin(), names->end(), kMarker) == names->end());

  SECTION("a second chmod changes the upper file only") {
    REQUIRE_OK(ov->setattr(f->node, chmod_to(0640), -1));
    CHECK((lstat_of(t / "upper/f").st_mode & 07777) == 0640);
    CHECK(test::get_xattr(t / "upper/f", kMarker).has_value());
  }
  SECTION("a fresh lookup (a remount) finds the data below again") {
    f = {};
    ov.reset();  // releases the workdir lock
    auto again = open_with_metacopy(t, false);  // metacopy files are read right with it off too
    auto g = walk(*again, "f");
    REQUIRE_OK(g);
    CHECK_FALSE(again->data_in_upper(*g->node));
    CHECK(read_through(*again, g->node) == data);
    CHECK(g->attr.st_blocks == lstat_of(t / "lower1/f").st_blocks);
  }
}

TEST_CASE("metacopy: opening for writing copies the data in place and keeps the attributes", "[metacopy]") {
  TempDir t;
  test::make_layers(t, 1);
  const std::string data = random_bytes(300000, 2);
  write_file(t / "lower1/f", data, 0755);
  REQUIRE(::chmod((t / "lower1/f").c_str(), 04755) == 0);
  // cap_net_raw=ep, a v2 capability set: writing data would drop it.
  const std::string caps("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  test::set_xattr(t / "lower1/f", "security.capability", caps);
  auto ov = open_with_metacopy(t, true);
  auto f = walk(*ov, "f");
  REQUIRE_OK(f);
  AttrChange times;
  times.mtime = true;
  times.values.st_mtim = {1000000000, 5};
  REQUIRE_OK(ov->setattr(f->node, times, -1));
  REQUIRE(test::get_xattr(t / "upper/f", kMarker).has_value());

  auto fd = ov->open(f->node, O_WRONLY);
  REQUIRE_OK(fd);
  CHECK(test::read_file(t / "upper/f") == data);
  CHECK_FALSE(test::get_xattr(t / "upper/f", kMarker).has_value());
  CHECK(ov->data_in_upper(*f->node));
  const auto up = lstat_of(t / "upper/f");
  CHECK((up.st_mode & 07777) == 04755);
  CHECK(up.st_mtim.tv_sec == 1000000000);
  CHECK(up.st_mtim.tv_nsec == 5);
  CHECK(test::get_xattr(t / "upper/f", "security.capability") == caps);
  REQUIRE(::pwrite(fd->get(), "NEW", 3, 0) == 3);
  CHECK(read_through(*ov, f->node) == "NEW" + data.substr(3));
  CHECK(test::read_file(t / "lower1/f") == data);
}

TEST_CASE("metacopy: O_TRUNC and truncate to 0 copy no data", "[metacopy]") {
  TempDir t;
  test::make_layers(t, 1);
  write_file(t / "lower1/f", random_bytes(50000, 3));
  auto ov = open_with_metacopy(t, true);
  auto f = walk(*ov, "f");
  REQUIRE_OK(f);
  REQUIRE_OK(ov->setattr(f->node, chmod_to(0600), -1));
  const auto bytes_before = ov->stats().copyup_bytes.load();
  auto fd = ov->open(f->node, O_WRONLY | O_TRUNC);
  REQUIRE_OK(fd);
  CHECK(lstat_of(t / "upper/f").st_size == 0);
  CHECK_FALSE(test::get_xattr(t / "upper/f", kMarker).has_value());
  CHECK(ov->stats().copyup_bytes.load() == bytes_before);
  CHECK(read_through(*ov, f->node).empty());
}

TEST_CASE("metacopy=off: chmod copies the data as before", "[metacopy]") {
  TempDir t;
  test::make_layers(t, 1);
  write_file(t / "lower1/f", "content");
  auto ov = open_with_metacopy(t, false);
  auto f = walk(*ov, "f");
  REQUIRE_OK(f);
  REQUIRE_OK(ov->setattr(f->node, chmod_to(0600), -1));
  CHECK(test::read_file(t / "upper/f") == "content");
  CHECK_FALSE(test::get_xattr(t / "upper/f", kMarker).has_value());
  CHECK(ov->data_in_upper(*f->node));
}

TEST_CASE("metacopy: a data copy that fails leaves the file reading as the lower one", "[metacopy]") {
  TempDir t;
  test::make_layers(t, 1);
  const std::string data = random_bytes(3 << 20, 4);
  write_file(t / "lower1/f", data);
  auto ov = open_with_metacopy(t, true);
  auto f = walk(*ov, "f");
  REQUIRE_OK(f);
  REQUIRE_OK(ov->setattr(f->node, chmod_to(0600), -1));
  FaultHookReset reset;
  strata::set_copy_fault_hook([](uint64_t offset) { return offset >= (1 << 20) ? ENOSPC : 0; });
  auto fd = ov->open(f->node, O_WRONLY);
  CHECK(errname(fd) == "ENOSPC");
  CHECK(test::get_xattr(t / "upper/f", kMarker).has_value());
  CHECK_FALSE(has_data(t / "upper/f"));  // the part copied was given back
  CHECK(lstat_of(t / "upper/f").st_size == 3 << 20);
  CHECK((lstat_of(t / "upper/f").st_mode & 07777) == 0600);
  CHECK_FALSE(ov->data_in_upper(*f->node));
  CHECK(read_through(*ov, f->node) == data);
  strata::set_copy_fault_hook(nullptr);
  auto again = ov->open(f->node, O_WRONLY);
  REQUIRE_OK(again);
  CHECK(test::read_file(t / "upper/f") == data);
}

TEST_CASE("metacopy: rename keeps the metacopy with a redirect to the data; link copies the data", "[metacopy]") {
  TempDir t;
  test::make_layers(t, 1);
  write_file(t / "lower1/d/a", "data of a");
  write_file(t / "lower1/b", "data of b");
  test::make_dir(t / "lower1/e");
  auto ov = open_with_metacopy(t, true);
  auto a = walk(*ov, "d/a");
  auto b = walk(*ov, "b");
  auto e = walk(*ov, "e");
  auto d = walk(*ov, "d");
  REQUIRE_OK(a);
  REQUIRE_OK(b);
  REQUIRE_OK(e);
  REQUIRE_OK(d);
  REQUIRE_OK(ov->rename(d->node, "a", e->node, "a2", 0));  // a lower file: no data copied
  CHECK(test::get_xattr(t / "upper/e/a2", kMarker).has_value());
  CHECK(test::get_xattr(t / "upper/e/a2", "trusted.overlay.redirect") == "/d/a");
  CHECK(test::is_chardev_whiteout(t / "upper/d/a"));
  CHECK_FALSE(has_data(t / "upper/e/a2"));
  CHECK(read_through(*ov, a->node) == "data of a");
  REQUIRE_OK(ov->rename(e->node, "a2", ov->root(), "a3", 0));  // again: the redirect stays
  CHECK(test::get_xattr(t / "upper/a3", "trusted.overlay.redirect") == "/d/a");
  CHECK(read_through(*ov, a->node) == "data of a");

  SECTION("a fresh lookup follows the redirect") {
    a = {};
    b = {};
    d = {};
    e = {};
    ov.reset();
    auto again = open_with_metacopy(t, true);
    auto a3 = walk(*again, "a3");
    REQUIRE_OK(a3);
    CHECK(read_through(*again, a3->node) == "data of a");
    auto fd = again->open(a3->node, O_WRONLY | O_APPEND);  // the data follows, the markers go
    REQUIRE_OK(fd);
    CHECK(test::read_file(t / "upper/a3") == "data of a");
    CHECK_FALSE(test::get_xattr(t / "upper/a3", kMarker).has_value());
    CHECK_FALSE(test::get_xattr(t / "upper/a3", "trusted.overlay.redirect").has_value());
  }
  SECTION("link copies the data") {
    REQUIRE_OK(ov->setattr(b->node, chmod_to(0600), -1));
    REQUIRE_OK(ov->link(b->node, ov->root(), "b2"));
    CHECK(test::read_file(t / "upper/b2") == "data of b");
    CHECK_FALSE(test::get_xattr(t / "upper/b", kMarker).has_value());
    auto b2 = walk(*ov, "b2");
    REQUIRE_OK(b2);
    CHECK(read_through(*ov, b2->node) == "data of b");
  }
  SECTION("a redirect that leaves the layers is not followed") {
    // ".." outright, and hidden behind a NUL (an xattr value may hold one; openat stops there).
    auto value = GENERATE(std::string("/../lower1/b"), std::string("/..\0/lower1/b", 13));
    test::set_xattr(t / "upper/a3", "trusted.overlay.redirect", value);
    a = {};
    b = {};
    d = {};
    e = {};
    ov.reset();
    auto again = open_with_metacopy(t, true);
    CHECK(errname(walk(*again, "a3")) == "EIO");
  }
}

TEST_CASE("metacopy files of the upper, as the kernel writes them", "[metacopy]") {
  TempDir t;
  test::make_layers(t, 1);
  write_file(t / "lower1/f", "lower data");
  write_file(t / "upper/f", "");
  REQUIRE(::truncate((t / "upper/f").c_str(), 10) == 0);
  test::set_xattr(t / "upper/f", kMarker, "");
  write_file(t / "upper/orphan", "");
  REQUIRE(::truncate((t / "upper/orphan").c_str(), 10) == 0);
  test::set_xattr(t / "upper/orphan", "user.overlay.metacopy", "");
  auto ov = open_with_metacopy(t, false);
  auto f = walk(*ov, "f");
  REQUIRE_OK(f);
  CHECK(read_through(*ov, f->node) == "lower data");
  // user.overlay.* markers on a mount whose markers are trusted.* are not ours (an unprivileged
  // user can write them): that file is what it is, the kernel reads it the same way.
  auto orphan = walk(*ov, "orphan");
  REQUIRE_OK(orphan);
  CHECK(read_through(*ov, orphan->node) == std::string(10, '\0'));
  // A trusted one with no data file below: the kernel answers EIO as well.
  write_file(t / "upper/orphan2", "");
  REQUIRE(::truncate((t / "upper/orphan2").c_str(), 10) == 0);
  test::set_xattr(t / "upper/orphan2", kMarker, "");
  CHECK(errname(walk(*ov, "orphan2")) == "EIO");
}

TEST_CASE("metacopy: an open for writing can defer the data to its first write", "[metacopy]") {
  TempDir t;
  test::make_layers(t, 1);
  write_file(t / "lower1/f", "lower data");
  auto ov = open_with_metacopy(t, true);
  auto f = walk(*ov, "f");
  REQUIRE_OK(f);
  auto fd = ov->open(f->node, O_WRONLY, true);
  REQUIRE_OK(fd);
  CHECK(test::get_xattr(t / "upper/f", kMarker).has_value());
  CHECK_FALSE(ov->data_in_upper(*f->node));
  CHECK(read_through(*ov, f->node) == "lower data");
  REQUIRE_OK(ov->copy_up(f->node));  // what the adapter does before the first write
  CHECK(ov->data_in_upper(*f->node));
  REQUIRE(::pwrite(fd->get(), "UPPER", 5, 0) == 5);
  CHECK(test::read_file(t / "upper/f") == "UPPER data");
  CHECK(read_through(*ov, f->node) == "UPPER data");

  SECTION("without metacopy=on the open copies the data at once") {
    f = {};
    fd = strata::Result<UniqueFd>();
    ov.reset();
    TempDir t2;
    test::make_layers(t2, 1);
    write_file(t2 / "lower1/g", "lower data");
    auto plain = open_with_metacopy(t2, false);
    auto g = walk(*plain, "g");
    REQUIRE_OK(g);
    REQUIRE_OK(plain->open(g->node, O_WRONLY, true));
    CHECK(plain->data_in_upper(*g->node));
    CHECK(test::read_file(t2 / "upper/g") == "lower data");
  }
}
