// Shared helpers of the strata tool: opening layers read-only, walking one layer, output.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fmt/format.h>

#include "strata/sys.h"
#include "tool.h"

namespace strata::tool {

void die(const std::string& message) {
  std::fflush(stdout);
  std::string line = "strata: " + message + "\n";
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
  std::exit(kExitTrouble);
}

std::unique_ptr<LayerStack> open_layers(const MountOptions& opts) {
  // need_workdir=false: an upperdir alone is enough for a reader. prepare_workdir() is never
  // called, so nothing is locked, created or probed in the layers.
  auto stack = LayerStack::open(opts, /*need_workdir=*/false);
  if (!stack) die(stack.error());
  return std::move(*stack);
}

std::unique_ptr<LayerStack> open_lowers(const std::vector<std::string>& lowerdirs) {
  if (lowerdirs.empty()) return nullptr;
  MountOptions opts;
  opts.lowerdirs = lowerdirs;
  return open_layers(opts);
}

DirView view_of(const Resolution& dir) {
  DirView view;
  for (const auto& d : dir.dirs) view.layers.push_back({d.layer, d.fd.get()});
  view.lower_path = dir.lower_path;
  return view;
}

const char* role_of(int layer) { return layer == 0 ? "upper" : "lower"; }

std::string layer_label(const LayerStack& stack, int layer) {
  return fmt::format("layer {} ({} {})", layer, role_of(layer), printable(stack.layer(layer).path));
}

std::string join(const std::string& dir, std::string_view name) {
  std::string out = dir;
  if (!out.empty() && out.back() != '/') out += '/';
  out.append(name);
  return out;
}

std::string real_path(const LayerStack& stack, int layer, const std::string& rel) {
  std::string base = stack.layer(layer).path;
  if (rel.empty()) return base;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  return join(base, rel);
}

const char* type_words(mode_t type) {
  switch (type & S_IFMT) {
    case S_IFREG: return "regular file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symbolic link";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
  }
  return "object";
}

const char* type_key(mode_t type) {
  switch (type & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "dir";
    case S_IFLNK: return "symlink";
    case S_IFCHR: return "char";
    case S_IFBLK: return "block";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
  }
  return "unknown";
}

mode_t type_of_dtype(unsigned char d_type) { return DTTOIF(d_type); }

Result<std::vector<DirEntry>> list_dir(int dirfd) {
  auto dup = sys::openat(dirfd, ".", O_RDONLY | O_DIRECTORY);
  if (!dup) return fail(dup.error());
  DIR* stream = ::fdopendir(dup->get());
  if (!stream) return fail_errno();
  dup->release();  // owned by the stream now
  std::vector<DirEntry> out;
  for (;;) {
    errno = 0;
    struct dirent* e = ::readdir(stream);
    if (!e) break;
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    unsigned char type = e->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st;
      if (::fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) continue;  // vanished
      type = IFTODT(st.st_mode);
    }
    out.push_back({std::string(name), type});
  }
  int err = errno;
  ::closedir(stream);
  if (err) return fail(err);
  std::sort(out.begin(), out.end(), [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return out;
}

namespace {

std::vector<std::string> split_path(const std::string& rel) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos <= rel.size()) {
    size_t slash = rel.find('/', pos);
    if (slash == std::string::npos) slash = rel.size();
    if (slash > pos) parts.push_back(rel.substr(pos, slash - pos));
    pos = slash + 1;
  }
  return parts;
}

}  // namespace

Result<UniqueFd> open_dir_in_layer(int root, const std::string& rel) {
  auto cur = sys::openat(root, ".", O_RDONLY | O_DIRECTORY);
  if (!cur) return cur;
  for (const auto& part : split_path(rel)) {
    auto next = sys::openat(cur->get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!next) return next;
    cur = std::move(next);
  }
  return cur;
}

Result<struct stat> stat_in_layer(int root, const std::string& rel) {
  auto parts = split_path(rel);
  if (parts.empty()) return sys::fstat(root);
  std::string dir;
  for (size_t i = 0; i + 1 < parts.size(); ++i) dir = join(dir, parts[i]);
  auto fd = open_dir_in_layer(root, dir);
  if (!fd) return fail(fd.error() == ELOOP ? ENOTDIR : fd.error());
  return sys::fstatat(fd->get(), parts.back().c_str());
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\{:03o}", c);
    } else {
      out += char(c);
    }
  }
  return out;
}

std::string shell_quote(std::string_view text) {
  bool safe = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("/._-+,:=@%").find(c) != std::string_view::npos;
  });
  if (safe) return std::string(text);
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

std::string human_size(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = double(bytes);
  int unit = -1;
  while (v >= 1024 && unit < 5) {
    v /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", v, kUnits[unit]);
}

// ---- Json ------------------------------------------------------------------------------------

void Json::separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_.empty()) {
    if (!first_.back()) out_ += ',';
    first_.back() = false;
  }
}

Json& Json::begin_object() {
  separate();
  out_ += '{';
  first_.push_back(true);
  return *this;
}

Json& Json::end_object() {
  out_ += '}';
  first_.pop_back();
  return *this;
}

Json& Json::begin_array() {
  separate();
  out_ += '[';
  first_.push_back(true);
  return *this;
}

Json& Json::end_array() {
  out_ += ']';
  first_.pop_back();
  return *this;
}

Json& Json::key(std::string_view name) {
  value(name);
  out_ += ':';
  after_key_ = true;
  return *this;
}

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0.
size_t utf8_length(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) { n = 2; cp = c & 0x1f; }
  else if ((c & 0xf0) == 0xe0) { n = 3; cp = c & 0x0f; }
  else if ((c & 0xf8) == 0xf0) { n = 4; cp = c & 0x07; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3f);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not valid UTF-8.
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

}  // namespace

Json& Json::value(std::string_view text) {
  separate();
  out_ += '"';
  for (size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '"') { out_ += "\\\""; ++i; continue; }
    if (c == '\\') { out_ += "\\\\"; ++i; continue; }
    if (c == '\n') { out_ += "\\n"; ++i; continue; }
    if (c == '\t') { out_ += "\\t"; ++i; continue; }
    if (c < 0x20 || c == 0x7f) { out_ += fmt::format("\\u{:04x}", c); ++i; continue; }
    size_t n = utf8_length(text, i);
    if (n == 0) {
      out_ += fmt::format("\\u{:04x}", 0xdc00 + c);
      ++i;
      continue;
    }
    out_.append(text.substr(i, n));
    i += n;
  }
  out_ += '"';
  return *this;
}

Json& Json::value(bool b) {
  separate();
  out_ += b ? "true" : "false";
  return *this;
}

Json& Json::value(int64_t n) {
  separate();
  out_ += std::to_string(n);
  return *this;
}

Json& Json::value(uint64_t n) {
  separate();
  out_ += std::to_string(n);
  return *this;
}

Json& Json::value(double d) {
  separate();
  out_ += fmt::format("{:.2f}", d);
  return *this;
}

Json& Json::null() {
  separate();
  out_ += "null";
  return *this;
}

}  // namespace strata::tool
