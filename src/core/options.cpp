#include "strata/options.h"

#include <fmt/format.h>

#include <array>
#include <cstdlib>
#include <string_view>

namespace strata {

namespace {

// Split on unescaped `sep`. Escapes are kept in the pieces (unescape() removes them later), so
// that a `\,` inside a lowerdir survives the comma split and still means a comma.
std::vector<std::string> split_escaped(const std::string& text, char sep) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\\' && i + 1 < text.size()) {
      parts.back() += c;
      parts.back() += text[++i];
    } else if (c == sep) {
      parts.emplace_back();
    } else {
      parts.back() += c;
    }
  }
  return parts;
}

std::string unescape(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) ++i;
    out += text[i];
  }
  return out;
}

// Mount flags and FUSE options that libfuse itself understands: handed through unchanged.
constexpr std::array kFuseOptions = {
    "allow_other", "allow_root", "auto_unmount", "rw", "ro", "dev", "nodev", "suid", "nosuid",
    "exec", "noexec", "sync", "async", "atime", "noatime", "diratime", "nodiratime", "dirsync",
    "default_permissions", "blkdev"};
constexpr std::array kFuseValueOptions = {"fsname", "subtype", "max_read", "context", "fscontext",
                                          "defcontext", "rootcontext", "blksize"};

// Accepted for compatibility (fuse-overlayfs, kernel overlay, mount(8)) without effect here.
constexpr std::array kIgnoredOptions = {
    "static_nlink", "userxattr", "relatime", "strictatime",
    "lazytime", "nostrictatime", "_netdev", "nofail", "noauto", "auto", "user", "users", "owner",
    "nouser", "defaults", "kernel_cache", "silent", "loud", "nfs_export", "clone_fd"};
constexpr std::array kIgnoredValueOptions = {
    "noxattrs", "xattr_permissions",
    "plugins", "fast_ino", "writeback", "threaded", "redirect_dir", "index", "xino",
    "max_idle_threads", "max_threads", "user", "uid", "gid", "umask"};

template <size_t N>
bool contains(const std::array<const char*, N>& list, std::string_view key) {
  for (const char* k : list)
    if (key == k) return true;
  return false;
}

}  // namespace

std::vector<std::string> split_lowerdir(const std::string& value) {
  std::vector<std::string> out;
  for (auto& piece : split_escaped(value, ':')) out.push_back(unescape(piece));
  return out;
}

std::expected<void, std::string> parse_option_string(const std::string& text, MountOptions& out) {
  for (const std::string& element : split_escaped(text, ',')) {
    if (element.empty()) continue;  // podman passes `a,,b` and trailing commas
    auto eq = element.find('=');
    std::string key = element.substr(0, eq);
    bool has_value = eq != std::string::npos;
    std::string value = has_value ? element.substr(eq + 1) : "";
    auto need_value = [&]() -> std::expected<void, std::string> {
      if (!has_value || value.empty())
        return std::unexpected(fmt::format("option '{}': needs a value ({}=...)", key, key));
      return {};
    };

    if (key == "lowerdir") {
      if (auto r = need_value(); !r) return r;
      out.lowerdirs = split_lowerdir(value);
      for (auto& dir : out.lowerdirs)
        if (dir.empty())
          return std::unexpected(fmt::format("lowerdir '{}': empty layer path", unescape(value)));
    } else if (key == "upperdir") {
      if (auto r = need_value(); !r) return r;
      out.upperdir = unescape(value);
    } else if (key == "workdir") {
      if (auto r = need_value(); !r) return r;
      out.workdir = unescape(value);
    } else if (key == "timeout") {
      if (auto r = need_value(); !r) return r;
      char* end = nullptr;
      double t = std::strtod(value.c_str(), &end);
      if (*end || t < 0) return std::unexpected(fmt::format("timeout '{}': not a number of seconds", value));
      out.timeout = t;
    } else if (key == "volatile" && !has_value) {
      out.volatile_mode = true;
    } else if (key == "fsync") {
      if (value != "0" && value != "1") return std::unexpected(fmt::format("fsync '{}': must be 0 or 1", value));
      out.volatile_mode = value == "0";
    } else if (key == "metacopy") {
      if (value != "on" && value != "off")
        return std::unexpected(fmt::format("metacopy '{}': must be on or off", value));
      out.metacopy = value == "on";
    } else if (key == "noacl" && !has_value) {
      out.acl = false;
    } else if (key == "debug" && !has_value) {
      out.debug = true;
    } else if (key == "trace") {
      if (auto r = need_value(); !r) return r;
      out.trace = value;
    } else if (key == "trace_file") {
      if (auto r = need_value(); !r) return r;
      out.trace_file = unescape(value);
    } else if (key == "trace_format") {
      if (value != "text" && value != "json")
        return std::unexpected(fmt::format("trace_format '{}': must be text or json", value));
      out.trace_format = value;
    } else if (key == "passthrough") {
      if (value != "auto" && value != "off")
        return std::unexpected(fmt::format("passthrough '{}': must be auto or off", value));
      out.passthrough = value;
    } else if (key == "uidmapping" || key == "gidmapping") {
      if (auto r = need_value(); !r) return r;
      auto ranges = IdMap::parse(key, value);
      if (!ranges) return std::unexpected(ranges.error());
      (key == "uidmapping" ? out.uid_ranges : out.gid_ranges) = std::move(*ranges);
    } else if (key == "squash_to_root" && !has_value) {
      out.squash_to_root = true;
    } else if (key == "squash_to_uid" || key == "squash_to_gid") {
      if (auto r = need_value(); !r) return r;
      char* end = nullptr;
      unsigned long id = std::strtoul(value.c_str(), &end, 10);
      if (*end || id > 0xffffffffUL) return std::unexpected(fmt::format("{} '{}': not an id", key, value));
      (key == "squash_to_uid" ? out.squash_uid : out.squash_gid) = uint32_t(id);
    } else if (!has_value && contains(kFuseOptions, key)) {
      if (key == "ro") out.read_only = true;
      if (key == "rw") out.read_only = false;
      out.fuse_options.push_back(key);
    } else if (has_value && contains(kFuseValueOptions, key)) {
      out.fuse_options.push_back(element);
    } else if ((!has_value && contains(kIgnoredOptions, key)) ||
               (has_value && contains(kIgnoredValueOptions, key)) || key.starts_with("x-")) {
      out.ignored.push_back(element);
    } else {
      return std::unexpected(fmt::format("unknown option '{}'", key));
    }
  }
  return {};
}

}  // namespace strata
