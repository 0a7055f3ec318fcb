#include "strata/fs_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "strata/sys.h"

namespace strata {

Status remove_children(int dirfd) {
  auto dup = sys::openat(dirfd, ".", O_RDONLY | O_DIRECTORY);
  if (!dup) return fail(dup.error());
  DIR* dir = ::fdopendir(dup->release());
  if (!dir) return fail_errno();
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(dir)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  ::closedir(dir);
  for (auto& n : names) STRATA_TRY(remove_tree(dirfd, n.c_str()));
  return {};
}

Status remove_tree(int dirfd, const char* name) {
  if (::unlinkat(dirfd, name, 0) == 0 || errno == ENOENT) return {};
  if (errno != EISDIR && errno != EPERM) return fail_errno();
  auto sub = sys::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!sub) return fail(sub.error());
  STRATA_TRY(remove_children(sub->get()));
  if (::unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) return fail_errno();
  return {};
}

}  // namespace strata
