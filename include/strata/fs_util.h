// Small directory helpers used by the core: all fd-relative, never following symlinks.
#pragma once
#include "strata/result.h"

namespace strata {

// Remove everything inside the directory `dirfd` (not the directory itself).
Status remove_children(int dirfd);
// Remove `name` in `dirfd`, recursively if it is a directory.
Status remove_tree(int dirfd, const char* name);

}  // namespace strata
