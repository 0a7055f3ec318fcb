// Helpers that build layer trees on disk the way image layers and the kernel overlay write them
// (char-device whiteouts, opaque/redirect xattrs, .wh. files) and open them with the core. Each
// helper REQUIREs its own syscalls, so a broken setup fails loudly instead of testing nothing.
#pragma once
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <expected>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "strata/layers.h"
#include "strata/overlay.h"
#include "strata/resolve.h"
#include "temp_dir.h"

namespace test {

inline void make_dir(const std::string& path, mode_t mode = 0755) {
  std::filesystem::create_directories(path);
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

inline void make_parent(const std::string& path) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
}

inline void write_file(const std::string& path, std::string_view data, mode_t mode = 0644) {
  make_parent(path);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, data.data(), data.size()) == ssize_t(data.size()));
  ::close(fd);
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

inline std::string read_fd(int fd) {
  std::string out;
  char buf[65536];
  for (off_t off = 0;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, off);
    REQUIRE(n >= 0);
    if (n == 0) return out;
    out.append(buf, n);
    off += n;
  }
}

// A whiteout as the kernel writes it: a character device 0/0.
inline void make_whiteout(const std::string& path) {
  make_parent(path);
  REQUIRE(::mknod(path.c_str(), S_IFCHR | 0, makedev(0, 0)) == 0);
}

inline void set_xattr(const std::string& path, const std::string& name, std::string_view value) {
  INFO("setxattr " << name << " on " << path << ": " << strerror(errno));
  REQUIRE(::lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0) == 0);
}

inline std::optional<std::string> get_xattr(const std::string& path, const std::string& name) {
  char buf[4096];
  ssize_t n = ::lgetxattr(path.c_str(), name.c_str(), buf, sizeof buf);
  if (n < 0) return std::nullopt;
  return std::string(buf, n);
}

inline bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

inline struct stat lstat_of(const std::string& path) {
  struct stat st {};
  INFO("lstat " << path);
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st;
}

inline bool is_chardev_whiteout(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

// Names in a directory on disk, sorted, without "." and "..".
inline std::vector<std::string> names_in(const std::string& path) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(path)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// "ok" or the errno's symbolic name, so a failed CHECK reads `"EEXIST" == "ENOENT"`.
template <class T>
std::string errname(const std::expected<T, int>& r) {
  if (r) return "ok";
  const char* name = ::strerrorname_np(r.error());
  return name ? name : std::to_string(r.error());
}

#define REQUIRE_OK(result)                                    \
  do {                                                        \
    const auto& strata_ok_r_ = (result);                      \
    INFO(#result " failed: " << ::test::errname(strata_ok_r_)); \
    REQUIRE(bool(strata_ok_r_));                              \
  } while (0)

// The standard layout under one TempDir: lower1..lowerN, upper, work.
inline void make_layers(const TempDir& t, int lowers) {
  for (int i = 1; i <= lowers; ++i) make_dir(t / ("lower" + std::to_string(i)));
  make_dir(t / "upper");
  make_dir(t / "work");
}

inline strata::MountOptions options_for(const TempDir& t, int lowers, bool writable = true) {
  strata::MountOptions opts;
  for (int i = 1; i <= lowers; ++i) opts.lowerdirs.push_back(t / ("lower" + std::to_string(i)));
  if (writable) {
    opts.upperdir = t / "upper";
    opts.workdir = t / "work";
  }
  return opts;
}

// Open (and for a writable stack prepare) the standard layout.
inline std::unique_ptr<strata::LayerStack> open_stack(const TempDir& t, int lowers, bool writable = true) {
  auto stack = strata::LayerStack::open(options_for(t, lowers, writable));
  INFO((stack ? std::string() : stack.error()));
  REQUIRE(stack.has_value());
  auto prepared = (*stack)->prepare_workdir();
  INFO((prepared ? std::string() : prepared.error()));
  REQUIRE(prepared.has_value());
  return std::move(*stack);
}

inline std::unique_ptr<strata::Overlay> open_overlay(const TempDir& t, int lowers, bool writable = true,
                                                     strata::Tracer* tracer = nullptr) {
  auto overlay = std::make_unique<strata::Overlay>(open_stack(t, lowers, writable), tracer);
  REQUIRE_OK(overlay->init());
  return overlay;
}

// A merged directory's layers as the DirView resolve_child and read_merged_dir take; the fds
// stay owned by `res`.
inline strata::DirView view_of(const strata::Resolution& res) {
  strata::DirView view;
  for (const auto& d : res.dirs) view.layers.push_back({d.layer, d.fd.get()});
  view.lower_path = res.lower_path;
  return view;
}

// Look up a '/'-separated path from the overlay's root, one component at a time.
inline strata::Result<strata::Entry> walk(strata::Overlay& ov, const std::string& path) {
  strata::Entry cur{ov.root(), {}};
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    std::string part = path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
    pos = slash == std::string::npos ? path.size() : slash + 1;
    if (part.empty()) continue;
    auto next = ov.lookup(cur.node, part);
    if (!next) return next;
    cur = std::move(*next);
  }
  return cur;
}

}  // namespace test
