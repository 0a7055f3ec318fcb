// strata: look at the layers of an overlay offline, without mounting anything.
// `strata COMMAND -o OPTIONS [FLAGS] [ARGS]`, with the -o syntax of strata-fs.
#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <fmt/format.h>

#include "tool.h"

using namespace strata;
using namespace strata::tool;

namespace {

constexpr const char* kUsage =
    "usage: strata which -o lowerdir=L1[:L2...][,upperdir=U] [-v] [--json] PATH\n"
    "       strata diff  -o lowerdir=L1[:L2...],upperdir=U [--json]\n"
    "       strata du    -o lowerdir=L1[:L2...] [-b] [--json] UPPER...\n"
    "       strata check -o lowerdir=L1[:L2...][,upperdir=U] [--strict] [--json]\n"
    "\n"
    "Look at the layers of a strata-fs (or kernel overlayfs) stack offline: nothing is mounted\n"
    "and nothing is written.\n"
    "\n"
    "commands:\n"
    "  which   how PATH resolves: the verdict at each layer (found, not there, whiteout, opaque,\n"
    "          redirect, hidden) and the layer and real file that answer; exit 1 if not found\n"
    "  diff    what the upper layer changed against the lowers, like docker diff:\n"
    "          A added, C changed (copied up or replaced), D deleted\n"
    "  du      bytes shared in the lowers (counted once) and private to each UPPER, and what\n"
    "          full copies would have cost\n"
    "  check   what would go wrong under the kernel overlay (.wh. files in the upper, stray\n"
    "          whiteouts, bad redirects, ...); exit 1 if there are problems\n"
    "\n"
    "flags:\n"
    "  -o OPTIONS    as for strata-fs(1): lowerdir, upperdir and workdir are used (no workdir\n"
    "                is needed), the other options are accepted and ignored; may be repeated\n"
    "  --json        one line of JSON instead of text\n"
    "  -v            which: show every component of PATH, not only the last\n"
    "  -b, --bytes   du: exact byte counts instead of KiB, MiB, ...\n"
    "  --strict      check: warnings count as problems (exit 1)\n"
    "  --version     print the version\n"
    "  --help        this text\n"
    "\n"
    "exit status: 0 found or clean, 1 not found or problems found, 2 bad input or I/O error.\n"
    "See strata(1).\n";

Args parse_command_line(int argc, char** argv) {
  Args args;
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (!flags_done && (a == "--help" || a == "-h")) {
      std::fputs(kUsage, stdout);
      std::exit(kExitOk);
    } else if (!flags_done && (a == "--version" || a == "-V")) {
      std::printf("strata version %s\n", STRATA_VERSION);
      std::exit(kExitOk);
    } else if (!flags_done && a == "--") {
      flags_done = true;
    } else if (!flags_done && (a == "-o" || (a.starts_with("-o") && a.size() > 2))) {
      std::string text = a == "-o" ? (i + 1 < argc ? argv[++i] : "") : a.substr(2);
      if (text.empty()) die("-o: needs an option list (-o lowerdir=DIR[:DIR...])");
      if (auto r = parse_option_string(text, args.opts); !r) die(r.error());
      args.have_options = true;
    } else if (!flags_done && a == "--json") {
      args.json = true;
    } else if (!flags_done && (a == "-v" || a == "--verbose")) {
      args.verbose = true;
    } else if (!flags_done && (a == "-b" || a == "--bytes")) {
      args.bytes = true;
    } else if (!flags_done && a == "--strict") {
      args.strict = true;
    } else if (!flags_done && a.size() > 1 && a[0] == '-') {
      die(fmt::format("unknown flag '{}' (see strata --help)", a));
    } else if (args.command.empty()) {
      args.command = a;
    } else {
      args.operands.push_back(a);
    }
  }
  return args;
}

// A walk holds an fd per layer for each directory level it is in (and diff two walks at once):
// take every descriptor the hard limit allows, so a deep tree over many layers fits.
void raise_fd_limit() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// A flag that means nothing for this command is a mistake worth saying, not ignoring.
void refuse_flag(const Args& args, bool given, const char* flag, const char* owner) {
  if (given) die(fmt::format("{}: {} is a flag of strata {} only", args.command, flag, owner));
}

}  // namespace

int main(int argc, char** argv) {
  Args args = parse_command_line(argc, argv);
  if (args.command.empty()) die("command: missing: which, diff, du or check (see strata --help)");
  if (args.command != "which" && args.command != "diff" && args.command != "du" && args.command != "check")
    die(fmt::format("unknown command '{}': which, diff, du or check (see strata --help)", args.command));
  if (!args.have_options)
    die(fmt::format("{}: -o lowerdir=DIR[:DIR...] missing (see strata --help)", args.command));
  if (args.command != "which") refuse_flag(args, args.verbose, "-v", "which");
  if (args.command != "du") refuse_flag(args, args.bytes, "-b", "du");
  if (args.command != "check") refuse_flag(args, args.strict, "--strict", "check");

  raise_fd_limit();
  if (args.command == "which") return run_which(args);
  if (args.command == "diff") return run_diff(args);
  if (args.command == "du") return run_du(args);
  return run_check(args);
}
