// The live summary: what the daemon holds and what copy-on-write has cost so far.
#include <fmt/format.h>

#include "fuse_ops.h"

namespace strata::fs {

namespace {

uint64_t get(const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); }

}  // namespace

std::string summary_text(Daemon& d) {
  Overlay& o = *d.overlay;
  OverlayStats& s = o.stats();
  std::string out = fmt::format("strata-fs summary: {} inodes held, {} open files\n", o.table().size(),
                                get(d.counters.open_files));
  for (int i = 0; i < o.stack().layer_count(); ++i) {
    if (i == 0 && !o.stack().has_upper()) continue;
    out += fmt::format("  lookups answered by layer {} ({}): {}\n", i, o.stack().layer(i).path,
                       get(s.lookups_per_layer[i]));
  }
  out += fmt::format("  lookups answered 'no such name': {}\n", get(s.negative_lookups));
  out += fmt::format("  copy-ups: {} ({} bytes)\n", get(s.copyups), get(s.copyup_bytes));
  out += fmt::format("  whiteouts written: {}, opaque dirs written: {}\n", get(s.whiteouts), get(s.opaque_dirs));
  out += fmt::format("  opens: {} passthrough, {} through the daemon{}\n", get(d.counters.passthrough_opens),
                     get(d.counters.normal_opens),
                     d.passthrough && !d.passthrough->usable() ? " (passthrough: " + d.passthrough->why_not() + ")" : "");
  out += fmt::format("  READ requests: {}, WRITE requests: {}, READDIR requests: {}\n",
                     get(d.counters.read_requests), get(d.counters.write_requests),
                     get(d.counters.readdir_requests));
  return out;
}

std::string summary_json(Daemon& d) {
  Overlay& o = *d.overlay;
  OverlayStats& s = o.stats();
  std::string layers;
  for (int i = 0; i < o.stack().layer_count(); ++i)
    layers += fmt::format("{}{}", i ? "," : "", get(s.lookups_per_layer[i]));
  return fmt::format(
      "{{\"inodes\":{},\"open_files\":{},\"lookups_per_layer\":[{}],\"negative_lookups\":{},"
      "\"copyups\":{},\"copyup_bytes\":{},\"whiteouts\":{},\"opaque_dirs\":{},"
      "\"passthrough_opens\":{},\"normal_opens\":{},\"estale_reopens\":{},\"passthrough\":{},"
      "\"read_requests\":{},\"write_requests\":{},\"readdir_requests\":{}}}",
      o.table().size(), get(d.counters.open_files), layers, get(s.negative_lookups), get(s.copyups),
      get(s.copyup_bytes), get(s.whiteouts), get(s.opaque_dirs), get(d.counters.passthrough_opens),
      get(d.counters.normal_opens), get(d.counters.estale_reopens),
      d.passthrough && d.passthrough->usable() ? "true" : "false", get(d.counters.read_requests),
      get(d.counters.write_requests), get(d.counters.readdir_requests));
}

}  // namespace strata::fs
