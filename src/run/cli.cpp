#include "cli.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "strata/options.h"
#include "util.h"

namespace strata::run {

namespace {

constexpr const char* kUsage =
    "usage: strata-run --lower DIR[:DIR...] [OPTIONS] [--] COMMAND [ARG...]\n"
    "\n"
    "Run COMMAND in a container whose root filesystem is a strata-fs overlay of the image\n"
    "layers, as root or as an ordinary user. Exit status: the command's (128+N when killed by\n"
    "signal N); 125 when strata-run fails, 126 when the command cannot run, 127 when not found.\n"
    "\n"
    "  --lower DIR[:DIR...]   the image layers, uppermost first (\\: escapes a colon)\n"
    "  --upper DIR            keep the container's changes in DIR (created if missing);\n"
    "                         without it the changes go to a temporary upper, removed at exit\n"
    "  --work DIR             strata-fs work directory (default: DIR.work beside --upper)\n"
    "  --hostname NAME        hostname inside (default: strata)\n"
    "  --env K=V              set an environment variable (repeatable); the environment\n"
    "                         starts clean with PATH, HOME=/root, TERM\n"
    "  --cwd DIR              working directory inside (default: /)\n"
    "  --bind SRC:DST[:ro]    bind-mount host SRC on DST inside (repeatable)\n"
    "  --net host|none        share the host network (default) or only a loopback\n"
    "  --init                 run a tiny init as pid 1 that reaps orphaned processes and\n"
    "                         forwards signals; the command is then pid 2\n"
    "  --trace CATEGORIES     trace strata-fs (all, or copyup+whiteout+...); the trace file\n"
    "                         is named on stderr\n"
    "  --trace-file PATH      where the trace goes\n"
    "  --help, --version\n"
    "\n"
    "See strata-run(1).\n";

bool is_valid_hostname(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_')) return false;
  return true;
}

// SRC:DST[:ro|rw]. Colons inside paths are not supported: bind paths rarely have them, and an
// escape syntax here would be one more thing to get wrong.
BindMount parse_bind(const std::string& spec) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t colon = spec.find(':', start);
    parts.push_back(spec.substr(start, colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  BindMount bind;
  if (parts.size() == 3) {
    if (parts[2] == "ro") bind.read_only = true;
    else if (parts[2] != "rw")
      dief("--bind {}: '{}' is not ro or rw (--bind SRC:DST[:ro])", spec, parts[2]);
  } else if (parts.size() != 2) {
    dief("--bind {}: expected SRC:DST or SRC:DST:ro", spec);
  }
  bind.source = parts[0];
  bind.target = parts[1];
  if (bind.source.empty()) dief("--bind {}: empty source", spec);
  if (bind.target.empty() || bind.target[0] != '/')
    dief("--bind {}: the destination must be an absolute path inside the container", spec);
  if (absolute_path(bind.target) == "/") dief("--bind {}: cannot bind over the container's root", spec);
  return bind;
}

}  // namespace

RunConfig parse_command_line(int argc, char** argv) {
  RunConfig cfg;
  bool have_lower = false;
  int i = 1;
  // `--opt VALUE` and `--opt=VALUE` both work; options end at the first non-option or `--`.
  auto value_of = [&](std::string_view arg, std::string_view name, std::string& out) {
    if (arg == name) {
      if (i + 1 >= argc) dief("{}: needs a value (see strata-run --help)", name);
      out = argv[++i];
      return true;
    }
    if (arg.size() > name.size() && arg.starts_with(name) && arg[name.size()] == '=') {
      out = std::string(arg.substr(name.size() + 1));
      return true;
    }
    return false;
  };
  for (; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string v;
    if (arg == "--") {
      ++i;
      break;
    } else if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--version" || arg == "-V") {
      std::printf("strata-run version %s\n", STRATA_VERSION);
      std::exit(0);
    } else if (value_of(arg, "--lower", v)) {
      if (v.empty()) die("--lower: needs at least one directory");
      for (auto& dir : split_lowerdir(v)) {
        if (dir.empty()) dief("--lower {}: empty layer path", v);
        cfg.lowers.push_back(dir);
      }
      have_lower = true;
    } else if (value_of(arg, "--upper", v)) {
      if (v.empty()) die("--upper: needs a directory");
      cfg.upper = v;
    } else if (value_of(arg, "--work", v)) {
      if (v.empty()) die("--work: needs a directory");
      cfg.work = v;
    } else if (value_of(arg, "--hostname", v)) {
      if (!is_valid_hostname(v)) dief("--hostname '{}': 1 to 64 letters, digits, '-', '.', '_'", v);
      cfg.hostname = v;
    } else if (value_of(arg, "--env", v)) {
      auto eq = v.find('=');
      if (eq == std::string::npos || eq == 0) dief("--env '{}': expected NAME=VALUE", v);
      cfg.env.push_back(v);
    } else if (value_of(arg, "--cwd", v)) {
      if (v.empty() || v[0] != '/') dief("--cwd '{}': must be an absolute path inside the container", v);
      cfg.cwd = v;
    } else if (value_of(arg, "--bind", v)) {
      cfg.binds.push_back(parse_bind(v));
    } else if (value_of(arg, "--net", v)) {
      if (v == "host") cfg.net = NetMode::Host;
      else if (v == "none") cfg.net = NetMode::None;
      else dief("--net '{}': must be host or none", v);
    } else if (arg == "--init") {
      cfg.init = true;
    } else if (value_of(arg, "--trace", v)) {
      if (v.empty()) die("--trace: needs categories (all, or copyup+whiteout+...)");
      cfg.trace = v;
    } else if (value_of(arg, "--trace-file", v)) {
      if (v.empty()) die("--trace-file: needs a path");
      cfg.trace_file = v;
    } else if (arg.starts_with("-") && arg != "-") {
      dief("unknown option '{}' (see strata-run --help)", arg);
    } else {
      break;
    }
  }
  for (; i < argc; ++i) cfg.command.emplace_back(argv[i]);

  if (!have_lower) die("--lower: missing (usage: strata-run --lower DIR[:DIR...] COMMAND [ARG...])");
  if (cfg.command.empty()) die("no command given (usage: strata-run --lower DIR COMMAND [ARG...])");
  if (!cfg.work.empty() && cfg.upper.empty()) die("--work: only meaningful with --upper");
  if (!cfg.trace_file.empty() && cfg.trace.empty()) die("--trace-file: needs --trace CATEGORIES");
  return cfg;
}

}  // namespace strata::run
