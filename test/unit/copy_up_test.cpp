// The copy-up engine: data (holes stay holes), metadata (owner, mode with setuid, xattrs, times
// to the nanosecond), every file type, and atomicity when the copy fails half-way.
#include <fcntl.h>
#include <sys/sysmacros.h>

#include <catch2/catch.hpp>
#include <random>

#include "layer_tree.h"
#include "strata/copy_up.h"
#include "strata/sys.h"

using strata::copy_up_object;
using strata::CopyUpReport;
using strata::CopyUpRequest;
using strata::LayerStack;
using strata::UniqueFd;
using test::write_file;

namespace {

constexpr uint64_t MiB = 1 << 20;

// The fault hook is process-wide: every test that sets it resets it on the way out, even when
// a REQUIRE throws.
struct FaultHookReset {
  ~FaultHookReset() { strata::set_copy_fault_hook(nullptr); }
};

UniqueFd open_dir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(fd);
  return fd;
}

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = char(gen());
  return out;
}

void pwrite_all(int fd, std::string_view data, off_t off) {
  REQUIRE(::pwrite(fd, data.data(), data.size(), off) == ssize_t(data.size()));
}

// Copy lower1/NAME to upper/NAME with the stack's staging dir, as Overlay::copy_up does.
strata::Result<CopyUpReport> copy_up(const LayerStack& stack, const TempDir& t, const std::string& name,
                                     bool with_data = true, uint64_t presented_ino = 0) {
  UniqueFd lower = open_dir(t / "lower1");
  UniqueFd upper = open_dir(t / "upper");
  CopyUpRequest req;
  req.src_dirfd = lower.get();
  req.src_name = name;
  req.src_st = test::lstat_of(t / ("lower1/" + name));
  req.dst_dirfd = upper.get();
  req.dst_name = name;
  req.with_data = with_data;
  req.presented_ino = presented_ino;
  return copy_up_object(stack, req);
}

void set_times(const std::string& path, timespec atime, timespec mtime) {
  timespec ts[2] = {atime, mtime};
  REQUIRE(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0);
}

bool same_time(const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

}  // namespace

TEST_CASE("copy_file_data keeps holes and content", "[copyup]") {
  TempDir t;
  FaultHookReset reset;
  UniqueFd src(::open((t / "src").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  UniqueFd dst(::open((t / "dst").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  REQUIRE(src);
  REQUIRE(dst);

  SECTION("data, a hole, data, a trailing hole") {
    pwrite_all(src.get(), random_bytes(MiB, 1), 0);
    pwrite_all(src.get(), random_bytes(MiB, 2), 9 * MiB);
    REQUIRE(::ftruncate(src.get(), 12 * MiB) == 0);
    auto report = strata::copy_file_data(src.get(), dst.get(), 12 * MiB);
    REQUIRE_OK(report);
    struct stat st = test::lstat_of(t / "dst");
    CHECK(st.st_size == off_t(12 * MiB));
    CHECK(uint64_t(st.st_blocks) * 512 <= 3 * MiB);  // 2 MiB of data, not 12
    CHECK(test::read_file(t / "dst") == test::read_file(t / "src"));
    CHECK(report->bytes == 2 * MiB);
    CHECK(std::string(report->method) != "none");
  }
  SECTION("a file that is all hole") {
    REQUIRE(::ftruncate(src.get(), 16 * MiB) == 0);
    auto report = strata::copy_file_data(src.get(), dst.get(), 16 * MiB);
    REQUIRE_OK(report);
    struct stat st = test::lstat_of(t / "dst");
    CHECK(st.st_size == off_t(16 * MiB));
    CHECK(st.st_blocks == 0);
    CHECK(report->bytes == 0);
  }
  SECTION("the fault hook's errno is the result") {
    pwrite_all(src.get(), random_bytes(2 * MiB, 3), 0);
    strata::set_copy_fault_hook([](uint64_t) { return EIO; });
    auto report = strata::copy_file_data(src.get(), dst.get(), 2 * MiB);
    REQUIRE_FALSE(report);
    CHECK(report.error() == EIO);
  }
}

TEST_CASE("copy_up_object copies metadata", "[copyup]") {
  TempDir t;
  test::make_layers(t, 1);
  auto stack = test::open_stack(t, 1);
  const timespec atime{1234567890, 123456789}, mtime{1500000000, 987654321};

  SECTION("regular file: owner, setuid mode, xattrs, times, data") {
    const std::string path = t / "lower1/f";
    write_file(path, "hello, upper");
    REQUIRE(::chown(path.c_str(), 1234, 5678) == 0);
    REQUIRE(::chmod(path.c_str(), 04755) == 0);  // after chown, which clears setuid
    test::set_xattr(path, "user.foo", "user value");
    test::set_xattr(path, "trusted.foo", std::string("bin\0ary", 7));
    test::set_xattr(path, "trusted.overlay.origin", "lower marker");  // not ours to copy
    test::set_xattr(path, "user.overlay.redirect", "/x");
    set_times(path, atime, mtime);

    auto report = copy_up(*stack, t, "f", true, 4242);
    REQUIRE_OK(report);
    CHECK(report->bytes == 12);
    const std::string up = t / "upper/f";
    struct stat st = test::lstat_of(up);  // before reading: a read may move atime
    CHECK(S_ISREG(st.st_mode));
    CHECK((st.st_mode & 07777) == 04755);
    CHECK(st.st_uid == 1234);
    CHECK(st.st_gid == 5678);
    CHECK(same_time(st.st_mtim, mtime));
    CHECK(same_time(st.st_atim, atime));
    CHECK(test::get_xattr(up, "user.foo") == "user value");
    CHECK(test::get_xattr(up, "trusted.foo") == std::string("bin\0ary", 7));
    CHECK_FALSE(test::get_xattr(up, "trusted.overlay.origin"));
    CHECK_FALSE(test::get_xattr(up, "user.overlay.redirect"));
    CHECK(test::get_xattr(up, strata::ino_xattr_name(*stack)) == "4242");
    CHECK(test::read_file(up) == "hello, upper");
    CHECK(test::read_file(t / "lower1/f") == "hello, upper");  // the lower is untouched
  }
  SECTION("regular file without data (an O_TRUNC open follows)") {
    write_file(t / "lower1/f", "data that is thrown away", 0640);
    auto report = copy_up(*stack, t, "f", false);
    REQUIRE_OK(report);
    CHECK(report->bytes == 0);
    struct stat st = test::lstat_of(t / "upper/f");
    CHECK(st.st_size == 0);
    CHECK((st.st_mode & 07777) == 0640);
    CHECK_FALSE(test::get_xattr(t / "upper/f", strata::ino_xattr_name(*stack)));  // presented_ino 0
  }
  SECTION("symlink") {
    const std::string path = t / "lower1/l";
    REQUIRE(::symlink("../some/where", path.c_str()) == 0);
    REQUIRE(::lchown(path.c_str(), 1234, 5678) == 0);
    set_times(path, atime, mtime);
    REQUIRE_OK(copy_up(*stack, t, "l", true, 77));
    struct stat st = test::lstat_of(t / "upper/l");
    CHECK(S_ISLNK(st.st_mode));
    CHECK(std::filesystem::read_symlink(t / "upper/l") == "../some/where");
    CHECK(st.st_uid == 1234);
    CHECK(st.st_gid == 5678);
    CHECK(same_time(st.st_mtim, mtime));
  }
  SECTION("fifo") {
    const std::string path = t / "lower1/p";
    REQUIRE(::mkfifo(path.c_str(), 0640) == 0);
    REQUIRE(::chown(path.c_str(), 1234, 5678) == 0);
    set_times(path, atime, mtime);
    REQUIRE_OK(copy_up(*stack, t, "p"));
    struct stat st = test::lstat_of(t / "upper/p");
    CHECK(S_ISFIFO(st.st_mode));
    CHECK((st.st_mode & 07777) == 0640);
    CHECK(st.st_uid == 1234);
    CHECK(same_time(st.st_mtim, mtime));
  }
  SECTION("character device") {
    const std::string path = t / "lower1/c";
    REQUIRE(::mknod(path.c_str(), S_IFCHR | 0620, makedev(1, 7)) == 0);
    REQUIRE(::chown(path.c_str(), 0, 5) == 0);
    REQUIRE(::chmod(path.c_str(), 0620) == 0);  // mknod's mode went through the umask
    REQUIRE_OK(copy_up(*stack, t, "c"));
    struct stat st = test::lstat_of(t / "upper/c");
    CHECK(S_ISCHR(st.st_mode));
    CHECK(st.st_rdev == makedev(1, 7));
    CHECK((st.st_mode & 07777) == 0620);
    CHECK(st.st_gid == 5);
  }
  SECTION("directory: the directory itself, not its content") {
    const std::string path = t / "lower1/d";
    write_file(path + "/child", "stays below");
    REQUIRE(::chown(path.c_str(), 1234, 5678) == 0);
    REQUIRE(::chmod(path.c_str(), 02770) == 0);
    test::set_xattr(path, "user.foo", "dir value");
    test::set_xattr(path, "trusted.overlay.opaque", "y");  // the lower's marker stays below
    set_times(path, atime, mtime);
    REQUIRE_OK(copy_up(*stack, t, "d", true, 99));
    struct stat st = test::lstat_of(t / "upper/d");
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 07777) == 02770);
    CHECK(st.st_uid == 1234);
    CHECK(st.st_gid == 5678);
    CHECK(same_time(st.st_mtim, mtime));
    CHECK(test::get_xattr(t / "upper/d", "user.foo") == "dir value");
    CHECK_FALSE(test::get_xattr(t / "upper/d", "trusted.overlay.opaque"));
    CHECK(test::get_xattr(t / "upper/d", strata::ino_xattr_name(*stack)) == "99");
    CHECK(test::names_in(t / "upper/d").empty());
  }
  SECTION("a name that exists in the upper is not replaced") {
    write_file(t / "lower1/f", "lower");
    write_file(t / "upper/f", "upper");
    auto report = copy_up(*stack, t, "f");
    REQUIRE_FALSE(report);
    CHECK(report.error() == EEXIST);
    CHECK(test::read_file(t / "upper/f") == "upper");
  }
  CHECK(test::names_in(t / "work/work").empty());  // nothing left in staging, success or not
}

namespace {

// After a copy-up that failed with `err`: no trace in the upper or the staging dir, the lower
// untouched, and the same copy succeeds once the fault is gone.
void check_failed_cleanly(const LayerStack& stack, const TempDir& t, const strata::Result<CopyUpReport>& report,
                          int err) {
  REQUIRE_FALSE(report);
  CHECK(test::errname(report) == strerrorname_np(err));
  CHECK_FALSE(test::exists(t / "upper/big"));
  CHECK(test::names_in(t / "upper").empty());
  CHECK(test::names_in(t / "work/work").empty());
  REQUIRE(test::exists(t / "lower1/big"));

  strata::set_copy_fault_hook(nullptr);
  REQUIRE_OK(copy_up(stack, t, "big"));
  CHECK(test::read_file(t / "upper/big") == test::read_file(t / "lower1/big"));
  CHECK(test::names_in(t / "work/work").empty());
}

// A hook failing with `err` from offset `from` on, recording the offsets it was asked about.
void fail_from(std::vector<uint64_t>& offsets, int err, uint64_t from) {
  strata::set_copy_fault_hook([&offsets, err, from](uint64_t off) {
    offsets.push_back(off);
    return off >= from ? err : 0;
  });
}

}  // namespace

TEST_CASE("copy_up_object failing at a later extent leaves nothing behind", "[copyup]") {
  TempDir t;
  test::make_layers(t, 1);
  auto stack = test::open_stack(t, 1);
  FaultHookReset reset;
  const int err = GENERATE(ENOSPC, EIO);
  INFO("injected " << strerrorname_np(err));
  // 4 MiB of data in four 1 MiB extents with holes between them: 7 MiB in all.
  UniqueFd f(::open((t / "lower1/big").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  REQUIRE(f);
  for (uint64_t i = 0; i < 4; ++i) pwrite_all(f.get(), random_bytes(MiB, unsigned(i)), 2 * i * MiB);
  f.reset();

  std::vector<uint64_t> offsets;
  fail_from(offsets, err, 2 * MiB);
  auto report = copy_up(*stack, t, "big");
  CHECK(offsets == std::vector<uint64_t>{0, 2 * MiB});  // stopped at the failure
  check_failed_cleanly(*stack, t, report, err);
}

TEST_CASE("copy_up_object failing in the middle of a dense file leaves nothing behind", "[copyup]") {
  TempDir t;
  test::make_layers(t, 1);
  auto stack = test::open_stack(t, 1);
  FaultHookReset reset;
  const int err = GENERATE(ENOSPC, EIO);
  INFO("injected " << strerrorname_np(err));
  write_file(t / "lower1/big", random_bytes(4 * MiB, 7));

  std::vector<uint64_t> offsets;
  fail_from(offsets, err, MiB);
  auto report = copy_up(*stack, t, "big");
  INFO("the hook was asked about " << offsets.size() << " chunk(s) of a 4 MiB copy");
  check_failed_cleanly(*stack, t, report, err);
}
