// The offline `strata` tool: what its subcommands share. Each subcommand (which, diff, du, check)
// lives in its own file, reads the layers through the same core code strata-fs uses (so the tool
// and the mount can never disagree about a verdict), never writes, and returns the exit status:
// 0 found / clean, 1 not found / problems, 2 bad input or an I/O error.
#pragma once
#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/layers.h"
#include "strata/options.h"
#include "strata/resolve.h"
#include "strata/result.h"

namespace strata::tool {

inline constexpr int kExitOk = 0;
inline constexpr int kExitNo = 1;       // which: not found; check: problems
inline constexpr int kExitTrouble = 2;  // bad input, unreadable layer

struct Args {
  std::string command;
  MountOptions opts;
  bool have_options = false;  // some -o was given
  bool json = false;
  bool verbose = false;       // which -v
  bool bytes = false;         // du -b
  bool strict = false;        // check --strict
  std::vector<std::string> operands;
};

// "strata: MESSAGE" on stderr as one line, exit 2. For bad input and unreadable layers.
[[noreturn]] void die(const std::string& message);

// The upper (if any) and the lowers of `opts`, opened read-only. No workdir is needed: the tool
// never writes. A workdir that is given is still checked the way strata-fs checks it.
std::unique_ptr<LayerStack> open_layers(const MountOptions& opts);
// Only these lowers (uppermost first), as a read-only stack; null for an empty list.
std::unique_ptr<LayerStack> open_lowers(const std::vector<std::string>& lowerdirs);

// ---- views of the core's answers -----------------------------------------------------------

DirView view_of(const Resolution& dir);
// "upper" or "lower".
const char* role_of(int layer);
// "layer 1 (lower /l1)".
std::string layer_label(const LayerStack& stack, int layer);
// The object's path on disk: the layer's directory (as given) joined with `rel`.
std::string real_path(const LayerStack& stack, int layer, const std::string& rel);
// "a/b" + "c" = "a/b/c"; "" + "c" = "c". For merged paths "/" + "c" = "/c".
std::string join(const std::string& dir, std::string_view name);

// "regular file", "directory", ... for an S_IFMT value; short JSON words ("file", "dir", ...).
const char* type_words(mode_t type);
const char* type_key(mode_t type);
mode_t type_of_dtype(unsigned char d_type);

// ---- walking a single layer --------------------------------------------------------------------

struct DirEntry {
  std::string name;
  unsigned char d_type;
};
// The entries of the directory `dirfd` (without "." and ".."), sorted by name.
Result<std::vector<DirEntry>> list_dir(int dirfd);
// lstat of `rel` (a '/'-separated path inside a layer) walked from `root` one component at a
// time without following symlinks: a link inside a layer never leads outside it.
Result<struct stat> stat_in_layer(int root, const std::string& rel);
Result<UniqueFd> open_dir_in_layer(int root, const std::string& rel);

// ---- output ---------------------------------------------------------------------------------

// Text output: control characters and backslashes escaped (\n, \t, \ooo, \\), so a name can
// never break the one-line-per-item format.
std::string printable(std::string_view text);
// For the "fix:" commands of `check`: single-quoted when it holds anything but safe characters.
std::string shell_quote(std::string_view text);
// "512 B", "4.0 KiB", "1.5 MiB".
std::string human_size(uint64_t bytes);

// A small JSON writer: one compact line. Strings that are not valid UTF-8 keep their bytes as
// \udcXX escapes (Python's surrogateescape: json.loads + os.fsencode gives the bytes back).
class Json {
 public:
  Json& begin_object();
  Json& end_object();
  Json& begin_array();
  Json& end_array();
  Json& key(std::string_view name);
  Json& value(std::string_view text);
  Json& value(const char* text) { return value(std::string_view(text)); }
  Json& value(const std::string& text) { return value(std::string_view(text)); }
  Json& value(bool b);
  Json& value(int64_t n);
  Json& value(uint64_t n);
  Json& value(int n) { return value(int64_t(n)); }
  Json& value(double d);
  Json& null();
  template <class T>
  Json& field(std::string_view name, const T& v) {
    key(name);
    return value(v);
  }
  const std::string& str() const { return out_; }

 private:
  void separate();
  std::string out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

// ---- the subcommands ----------------------------------------------------------------------

int run_which(const Args& args);
int run_diff(const Args& args);
int run_du(const Args& args);
int run_check(const Args& args);

}  // namespace strata::tool
