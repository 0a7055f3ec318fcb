// The command line of strata-run, parsed into a RunConfig: what the user asked for, checked for
// form only (paths are looked at later, by the preflight in main.cpp). Turning the RunConfig into
// setup steps is plan.cpp's job.
#pragma once
#include <string>
#include <vector>

namespace strata::run {

struct BindMount {
  std::string source;  // host path
  std::string target;  // absolute path inside the container
  bool read_only = false;
};

enum class NetMode { Host, None };

struct RunConfig {
  std::vector<std::string> lowers;  // uppermost first
  std::string upper;                // empty: an ephemeral upper in a temporary directory
  std::string work;                 // empty: beside the upper (UPPER.work) or ephemeral
  std::string hostname = "strata";
  std::vector<std::string> env;     // K=V, applied over the defaults in order
  std::string cwd = "/";
  std::vector<BindMount> binds;
  NetMode net = NetMode::Host;
  std::string trace;                // strata-fs trace categories; empty: off
  std::string trace_file;           // empty: chosen by the launcher and printed
  bool init = false;                // pid 1 is strata-run's own init, the command pid 2 (init.h)
  std::vector<std::string> command;
};

// Parses argv; prints --help/--version and exits 0; dies with a one-line message on bad input.
RunConfig parse_command_line(int argc, char** argv);

}  // namespace strata::run
