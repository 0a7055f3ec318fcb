// Merged readdir: the entries of all layers of a merged directory, each name once (the topmost
// wins), without whiteouts, `.wh.` markers or names a whiteout hides, with d_ino equal to the
// st_ino that a lookup of the same name gives.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "strata/layers.h"
#include "strata/resolve.h"
#include "strata/result.h"

namespace strata {

struct MergedEntry {
  std::string name;
  uint8_t d_type;   // DT_*
  uint64_t ino;     // as st_ino would show it
  int layer;        // the layer the entry comes from
};

// Read the merged directory `dir` (not including "." and ".."). With `stop_at_first`, return as
// soon as one visible entry is found (the emptiness check of rmdir and rename).
Result<std::vector<MergedEntry>> read_merged_dir(const LayerStack& stack, const DirView& dir,
                                                 bool stop_at_first = false);

// st_ino of an object found in `layer`: what a copy-up recorded, else its own (dev, ino).
uint64_t presented_ino_of(const LayerStack& stack, int layer, int dirfd, const char* name,
                          const struct stat& st);

}  // namespace strata
