#include "idmap.h"

#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "util.h"

namespace strata::run {

namespace {

// The first range of /etc/subuid (or subgid) for this user, by name or by number.
std::optional<IdRange> find_range(const char* file, const std::string& name, unsigned long id) {
  auto text = read_file(file);
  if (!text) return std::nullopt;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t end = text->find('\n', pos);
    if (end == std::string::npos) end = text->size();
    std::string line = text->substr(pos, end - pos);
    pos = end + 1;
    auto c1 = line.find(':'), c2 = line.rfind(':');
    if (c1 == std::string::npos || c1 == c2) continue;
    std::string who = line.substr(0, c1);
    if (who != name && who != std::to_string(id)) continue;
    char* e1 = nullptr;
    char* e2 = nullptr;
    std::string start = line.substr(c1 + 1, c2 - c1 - 1), count = line.substr(c2 + 1);
    IdRange r{std::strtoul(start.c_str(), &e1, 10), std::strtoul(count.c_str(), &e2, 10)};
    if (start.empty() || count.empty() || *e1 || *e2 || r.count == 0) continue;
    return r;
  }
  return std::nullopt;
}

std::string find_helper(const char* name) {
  const char* path = std::getenv("PATH");
  return find_in_dirs(std::string(path ? path : "") + ":/usr/bin:/usr/sbin:/bin:/sbin", name).value_or("");
}

std::string run_helper(const std::string& helper, const std::vector<std::string>& args) {
  pid_t pid = ::fork();
  if (pid < 0) return fmt::format("fork: {}", errno_text(errno));
  if (pid == 0) {
    std::vector<char*> argv = {const_cast<char*>(helper.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(helper.c_str(), argv.data());
    die(fmt::format("{}: {}", helper, errno_text(errno)));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string line = helper;
    for (const auto& a : args) line += " " + a;
    return fmt::format("{} failed (see its message above); STRATA_RUN_IDMAP=single maps only your own uid", line);
  }
  return {};
}

}  // namespace

IdMapPlan plan_id_maps() {
  IdMapPlan plan;
  plan.uid = ::geteuid();
  plan.gid = ::getegid();
  if (plan.uid == 0) {
    plan.kind = IdMapPlan::Kind::Identity;
    return plan;
  }
  const char* forced = std::getenv("STRATA_RUN_IDMAP");
  if (forced && std::string_view(forced) == "single") return plan;

  std::string name;
  if (struct passwd* pw = ::getpwuid(plan.uid)) name = pw->pw_name;
  auto subuid = find_range("/etc/subuid", name, plan.uid);
  auto subgid = find_range("/etc/subgid", name, plan.gid);
  std::string newuidmap = find_helper("newuidmap"), newgidmap = find_helper("newgidmap");
  if (subuid && subgid && !newuidmap.empty() && !newgidmap.empty()) {
    plan.kind = IdMapPlan::Kind::Subordinate;
    plan.subuid = *subuid;
    plan.subgid = *subgid;
    plan.newuidmap = newuidmap;
    plan.newgidmap = newgidmap;
  }
  return plan;
}

std::string describe(const IdMapPlan& plan) {
  switch (plan.kind) {
    case IdMapPlan::Kind::Identity: return "identity (running as root)";
    case IdMapPlan::Kind::Subordinate:
      return fmt::format("0 -> uid {}, 1..{} -> {}.. (newuidmap); gid likewise", plan.uid, plan.subuid.count,
                         plan.subuid.start);
    case IdMapPlan::Kind::Single: return fmt::format("0 -> uid {} / gid {} only", plan.uid, plan.gid);
  }
  return "?";
}

std::string apply_id_maps(const IdMapPlan& plan, pid_t pid) {
  std::string proc = fmt::format("/proc/{}", pid);
  auto write_map = [&](const std::string& file, const std::string& text) -> std::string {
    if (write_file(proc + "/" + file, text)) return {};
    return fmt::format("{}/{}: {} (writing '{}')", proc, file, errno_text(errno), text.substr(0, text.size() - 1));
  };
  std::string err;
  switch (plan.kind) {
    case IdMapPlan::Kind::Identity:
      if (err = write_map("uid_map", "0 0 4294967295\n"); err.empty()) err = write_map("gid_map", "0 0 4294967295\n");
      return err;
    case IdMapPlan::Kind::Subordinate:
      err = run_helper(plan.newuidmap, {std::to_string(pid), "0", std::to_string(plan.uid), "1", "1",
                                        std::to_string(plan.subuid.start), std::to_string(plan.subuid.count)});
      if (err.empty())
        err = run_helper(plan.newgidmap, {std::to_string(pid), "0", std::to_string(plan.gid), "1", "1",
                                          std::to_string(plan.subgid.start), std::to_string(plan.subgid.count)});
      return err;
    case IdMapPlan::Kind::Single:
      if (err = write_map("uid_map", fmt::format("0 {} 1\n", plan.uid)); !err.empty()) return err;
      if (err = write_map("setgroups", "deny\n"); !err.empty()) return err;
      return write_map("gid_map", fmt::format("0 {} 1\n", plan.gid));
  }
  return "unknown id map kind";
}

}  // namespace strata::run
