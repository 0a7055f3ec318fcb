// strata which: how one path resolves, component by component, layer by layer.
//
// The verdicts come from the core's resolve_child (want_trail), the same code that answers the
// mount's lookups. The core stops at the first layer that decides; to show what that decision
// hides, the layers it did not search are looked at too (one lstat each) and an object there is
// reported as "hidden", with the whiteout, opaque directory or file above that hid it.
#include <fmt/format.h>

#include <climits>
#include <cstdio>
#include <map>

#include "strata/sys.h"
#include "strata/whiteout.h"
#include "tool.h"

namespace strata::tool {

namespace {

// What ended the search above a layer.
struct Stop {
  int layer = -1;
  std::string path;  // merged path of the object that stopped it
  std::string kind;  // whiteout, aufs_whiteout, opaque, not_merged, or the type key of a non-directory
  std::string what;  // "whiteout (character device 0/0)", "opaque directory (xattr ...)", "regular file"
  std::string real;  // that object on disk
};

struct LayerLine {
  int layer = 0;
  std::string verdict;  // absent found whiteout aufs_whiteout opaque not_merged redirect hidden marker
  bool answer = false;  // this layer holds the object the merged tree shows
  mode_t type = 0;      // of the object in this layer; 0 when nothing is there
  std::string real;     // what was found on disk; empty when nothing is there
  std::string detail;   // opaque kind, redirect target
  std::string text;     // human words
  std::optional<Stop> hidden_by;
};

struct Step {
  std::string path;  // merged path, "/" for the root
  Resolution res;
  std::vector<std::string> rel;   // by layer: where this object is, or would be, inside that layer
  std::vector<LayerLine> lines;   // by layer (slot 0 unused without an upper)
  std::optional<Stop> stop;       // a stop in this component's own search
  // When not found (or not a directory with components left): why.
  std::string reason;
  std::optional<Stop> hidden_by;
  int data_layer = -1;  // a metacopy file of the upper: the layer its data comes from
};

std::string child_path(const std::string& parent, const std::string& name) {
  return parent == "/" ? "/" + name : parent + "/" + name;
}

std::pair<std::string, std::string> split_leaf(const std::string& rel) {
  auto slash = rel.rfind('/');
  if (slash == std::string::npos) return {"", rel};
  return {rel.substr(0, slash), rel.substr(slash + 1)};
}

class Which {
 public:
  explicit Which(const LayerStack& stack) : stack_(stack), first_(stack.has_upper() ? 0 : 1) {}

  Step root() {
    Step s;
    s.path = "/";
    auto res = resolve_root(stack_);
    if (!res) die(fmt::format("/: {}", sys::errno_text(res.error())));
    s.res = std::move(*res);
    s.rel.assign(stack_.layer_count(), "");
    s.lines.resize(stack_.layer_count());
    for (int l = first_; l < stack_.layer_count(); ++l) {
      LayerLine& line = s.lines[l];
      line.layer = l;
      line.type = S_IFDIR;
      line.real = real_path(stack_, l, "");
      if (s.stop) {
        hide(line, *s.stop);
        continue;
      }
      line.answer = l == s.res.layer;
      DirMarkers markers = read_dir_markers(stack_.layer(l).root.get());
      if (markers.opaque != OpaqueKind::None) {
        line.verdict = "opaque";
        line.detail = describe(markers.opaque);
        line.text = fmt::format("found: opaque directory ({}): nothing below merges", line.detail);
        s.stop = Stop{l, "/", "opaque", fmt::format("opaque directory ({})", line.detail), line.real};
      } else {
        line.verdict = "found";
        line.text = line.answer ? "found: directory" : "found: directory, merged into the one above";
      }
    }
    return s;
  }

  Step child(const Step& parent, const std::string& name) {
    Step s;
    s.path = child_path(parent.path, name);
    auto res = resolve_child(stack_, view_of(parent.res), name, true);
    if (!res) die(fmt::format("{}: {}", printable(s.path), sys::errno_text(res.error())));
    s.res = std::move(*res);
    s.rel.assign(stack_.layer_count(), "");
    s.lines.resize(stack_.layer_count());

    if (is_aufs_marker_name(name)) {
      marker_lines(parent, name, s);
      return s;
    }

    std::map<int, const LayerVerdict*> trail;
    for (const auto& v : s.res.trail) trail.try_emplace(v.layer, &v);

    // Where the name is looked for in each layer: beside the parent's part, until a redirect
    // sends the layers below it elsewhere (absolute: from the layer roots; relative: a sibling).
    bool absolute = false;
    std::string abs_rel, cur = name;
    for (int l = first_; l < stack_.layer_count(); ++l) {
      std::string rel = absolute ? abs_rel : join(parent.rel[l], cur);
      s.rel[l] = rel;
      LayerLine& line = s.lines[l];
      line.layer = l;
      auto it = trail.find(l);
      if (it == trail.end()) {
        unsearched(parent, s, line, rel);
        continue;
      }
      const LayerVerdict& v = *it->second;
      line.type = v.type;
      line.answer = s.res.found && l == s.res.layer;
      switch (v.kind) {
        case LayerVerdict::Absent:
          line.verdict = "absent";
          line.text = "not there";
          break;
        case LayerVerdict::Found:
          line.verdict = "found";
          line.real = real_path(stack_, l, rel);
          if (line.answer) {
            line.text = fmt::format("found: {}", type_words(v.type));
            if (!S_ISDIR(v.type))
              s.stop = Stop{l, s.path, type_key(v.type), type_words(v.type), line.real};
          } else {
            line.text = "found: directory, merged into the one above";
          }
          break;
        case LayerVerdict::Whiteout:
          line.verdict = "whiteout";
          line.type = S_IFCHR;
          line.real = real_path(stack_, l, rel);
          line.text = "whiteout (character device 0/0): hides the name here and below";
          s.stop = Stop{l, s.path, "whiteout", "whiteout (character device 0/0)", line.real};
          break;
        case LayerVerdict::AufsWhiteout: {
          auto [dir, leaf] = split_leaf(rel);
          line.verdict = "aufs_whiteout";
          line.type = S_IFREG;
          line.real = real_path(stack_, l, join(dir, std::string(kAufsWhiteoutPrefix) + leaf));
          line.text = "whiteout (.wh. file): hides the name here and below";
          s.stop = Stop{l, s.path, "aufs_whiteout", "whiteout (.wh. file)", line.real};
          break;
        }
        case LayerVerdict::Opaque:
          line.verdict = "opaque";
          line.real = real_path(stack_, l, rel);
          line.detail = v.detail;
          line.text = fmt::format("found: opaque directory ({}): nothing below merges", v.detail);
          s.stop = Stop{l, s.path, "opaque", fmt::format("opaque directory ({})", v.detail), line.real};
          break;
        case LayerVerdict::NotMerged:
          line.verdict = "not_merged";
          line.real = real_path(stack_, l, rel);
          line.text = fmt::format("{}: ignored, a non-directory below a directory ends the merge",
                                  type_words(v.type));
          s.stop = Stop{l, s.path, "not_merged",
                        fmt::format("{} below the directory above", type_words(v.type)), line.real};
          break;
        case LayerVerdict::Redirect:
          line.verdict = "redirect";
          line.real = real_path(stack_, l, rel);
          line.detail = v.detail;
          line.text = fmt::format("found: directory, redirected: the layers below are searched at {}",
                                  printable(v.detail));
          if (v.detail.starts_with('/')) {
            absolute = true;
            abs_rel = v.detail.substr(v.detail.find_first_not_of('/') == std::string::npos
                                          ? v.detail.size()
                                          : v.detail.find_first_not_of('/'));
          } else {
            cur = v.detail;
          }
          break;
      }
    }
    if (!s.res.found) explain_absence(s);
    else find_metacopy_data(parent, name, s);
    return s;
  }

  // Text: the headline of a step ("regular file from layer 1 (lower /l1): /l1/x").
  std::string headline(const Step& s) const {
    if (!s.res.found) return "not found: " + s.reason;
    const LayerLine& top = s.lines[s.res.layer];
    std::string out = fmt::format("{} from {}: {}", type_words(s.res.st.st_mode), layer_label(stack_, s.res.layer),
                                  printable(top.real));
    if (s.data_layer >= 0)
      out += fmt::format("; metadata only (metacopy): its data is the file in layer {}: {}", s.data_layer,
                         printable(s.lines[s.data_layer].real));
    if (S_ISDIR(s.res.st.st_mode)) {
      std::vector<std::string> below;
      for (const auto& d : s.res.dirs)
        if (d.layer != s.res.layer) below.push_back(std::to_string(d.layer));
      if (!below.empty())
        out += fmt::format(", merged with layer{} {}", below.size() > 1 ? "s" : "", fmt::join(below, ", "));
      for (const auto& d : s.res.dirs) {
        const LayerLine& line = s.lines[d.layer];
        if (line.verdict == "opaque") out += fmt::format("; opaque in layer {} ({})", d.layer, line.detail);
        if (line.verdict == "redirect")
          out += fmt::format("; redirected in layer {} to {}", d.layer, printable(line.detail));
      }
    }
    return out;
  }

  void print_lines(const Step& s) const {
    for (int l = first_; l < stack_.layer_count(); ++l) {
      const LayerLine& line = s.lines[l];
      std::string where = line.real.empty() ? "" : ": " + printable(line.real);
      fmt::print("  {}: {}{}\n", layer_label(stack_, l), line.text, where);
    }
  }

  void json_stop(Json& j, const std::optional<Stop>& stop) const {
    if (!stop) {
      j.null();
      return;
    }
    j.begin_object();
    j.field("layer", stop->layer).field("role", role_of(stop->layer));
    j.field("layer_dir", stack_.layer(stop->layer).path);
    j.field("path", stop->path).field("kind", stop->kind).field("what", stop->what);
    j.field("real_path", stop->real);
    j.end_object();
  }

  void json_step(Json& j, const Step& s) const {
    j.begin_object();
    j.field("path", s.path).field("found", s.res.found);
    if (s.res.found) {
      j.field("type", type_key(s.res.st.st_mode)).field("layer", s.res.layer);
      j.field("real_path", s.lines[s.res.layer].real);
    } else {
      j.key("type").null().key("layer").null().key("real_path").null();
    }
    j.key("data_layer");
    s.data_layer >= 0 ? j.value(s.data_layer) : j.null();
    j.key("layers").begin_array();
    for (int l = first_; l < stack_.layer_count(); ++l) {
      const LayerLine& line = s.lines[l];
      j.begin_object();
      j.field("layer", l).field("role", role_of(l)).field("layer_dir", stack_.layer(l).path);
      j.field("verdict", line.verdict).field("answer", line.answer);
      j.key("type");
      line.type ? j.value(type_key(line.type)) : j.null();
      j.key("real_path");
      line.real.empty() ? j.null() : j.value(line.real);
      j.key("detail");
      line.detail.empty() ? j.null() : j.value(line.detail);
      j.field("text", line.text);
      j.key("hidden_by");
      json_stop(j, line.hidden_by);
      j.end_object();
    }
    j.end_array();
    j.end_object();
  }

 private:
  // A regular file of the upper marked metacopy holds the attributes only: its data is the
  // first regular file of the same name below (what the mount reads; see overlay_metacopy.cpp).
  void find_metacopy_data(const Step& parent, const std::string& name, Step& s) const {
    if (s.res.layer != 0 || !S_ISREG(s.res.st.st_mode)) return;
    DirView lowers = view_of(parent.res);  // the parent's fds: names are looked at one level at a time
    if (lowers.layers.empty() || lowers.layers.front().layer != 0) return;
    if (!has_metacopy(lowers.layers.front().fd, name.c_str())) return;
    auto data = resolve_metacopy_data(stack_, lowers, name);
    LayerLine& top = s.lines[0];
    if (!data) {
      top.text = "found: regular file, metadata only (metacopy), but no regular file below holds its data: "
                 "the mount answers EIO";
      return;
    }
    s.data_layer = data->layer;
    top.text = fmt::format("found: regular file, metadata only (metacopy): its data is in layer {}{}", data->layer,
                           data->path.empty() ? "" : fmt::format(" at /{} (redirect)", printable(data->path)));
    LayerLine& below = s.lines[data->layer];
    below.verdict = "data";
    below.text = "regular file: the data of the metacopy file in layer 0 (read until it is written)";
    below.hidden_by.reset();
    if (!data->path.empty()) {  // renamed: the data is elsewhere than this name
      below.type = S_IFREG;
      below.real = real_path(stack_, data->layer, data->path);
    }
  }

  void hide(LayerLine& line, const Stop& stop) const {
    line.verdict = "hidden";
    line.hidden_by = stop;
    line.text = fmt::format("{}, hidden by the {} {} in layer {}", type_words(line.type), stop.what,
                            printable(stop.path), stop.layer);
  }

  // A layer the core did not search: say whether something there is hidden, and by what.
  void unsearched(const Step& parent, Step& s, LayerLine& line, const std::string& rel) const {
    auto st = stat_in_layer(stack_.layer(line.layer).root.get(), rel);
    if (!st) {
      line.verdict = "absent";
      line.text = "not there";
      return;
    }
    line.type = st->st_mode & S_IFMT;
    line.real = real_path(stack_, line.layer, rel);
    std::optional<Stop> why = s.stop;
    if (!why) why = parent.lines[line.layer].hidden_by;
    if (why) {
      hide(line, *why);
      if (is_whiteout(*st)) line.text = "whiteout, " + line.text.substr(line.text.find("hidden"));
    } else {
      line.verdict = "hidden";
      line.text = fmt::format("{}, not merged", type_words(line.type));
    }
  }

  // A `.wh.` name is a marker in every layer, never an entry of the merged tree.
  void marker_lines(const Step& parent, const std::string& name, Step& s) const {
    s.reason = "names starting with .wh. are whiteout markers, never shown in the merged tree";
    for (int l = first_; l < stack_.layer_count(); ++l) {
      LayerLine& line = s.lines[l];
      line.layer = l;
      s.rel[l] = join(parent.rel[l], name);
      if (auto st = stat_in_layer(stack_.layer(l).root.get(), s.rel[l]); st) {
        line.verdict = "marker";
        line.type = st->st_mode & S_IFMT;
        line.real = real_path(stack_, l, s.rel[l]);
        line.text = "whiteout marker (.wh.): never visible";
      } else {
        line.verdict = "absent";
        line.text = "not there";
      }
    }
  }

  void explain_absence(Step& s) const {
    if (s.stop && (s.stop->kind == "whiteout" || s.stop->kind == "aufs_whiteout")) {
      s.hidden_by = s.stop;
      s.reason = fmt::format("whited out in {}: {} is a {}", layer_label(stack_, s.stop->layer),
                             printable(s.stop->real), s.stop->what);
      return;
    }
    for (int l = first_; l < stack_.layer_count(); ++l) {
      const LayerLine& line = s.lines[l];
      if (line.verdict != "hidden" || !line.hidden_by) continue;
      s.hidden_by = line.hidden_by;
      const Stop& h = *line.hidden_by;
      s.reason = fmt::format("hidden by the {} {} in {}: {}; {} has {}", h.what, printable(h.path),
                             layer_label(stack_, h.layer), printable(h.real), layer_label(stack_, l),
                             printable(line.real));
      return;
    }
    s.reason = "in no layer";
  }

  const LayerStack& stack_;
  int first_;
};

}  // namespace

int run_which(const Args& args) {
  if (args.operands.empty()) die("which: PATH missing (usage: strata which -o OPTIONS PATH)");
  if (args.operands.size() > 1)
    die(fmt::format("which: '{}': unexpected argument (give one PATH)", printable(args.operands[1])));
  const std::string& arg = args.operands[0];
  if (arg.empty()) die("which: PATH is empty (use / for the root)");
  // Lexically, from the merged root: ".." never leaves it, as on the mount.
  std::vector<std::string> names;
  for (size_t pos = 0; pos <= arg.size();) {
    size_t slash = arg.find('/', pos);
    if (slash == std::string::npos) slash = arg.size();
    std::string part = arg.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!names.empty()) names.pop_back();
      continue;
    }
    if (part.size() > NAME_MAX)
      die(fmt::format("which: {}: {}", printable(part.substr(0, 40) + "..."), sys::errno_text(ENAMETOOLONG)));
    names.push_back(part);
  }
  std::string full = "/";
  for (const auto& n : names) full = child_path(full, n);

  auto stack = open_layers(args.opts);
  Which which(*stack);
  std::vector<Step> steps;
  steps.push_back(which.root());
  std::string failure;  // set when a component before the last ends the walk
  for (size_t i = 0; i < names.size(); ++i) {
    steps.push_back(which.child(steps.back(), names[i]));
    // Only the layer numbers of a parent are shown later: its fds can go (a deep path over many
    // layers would otherwise hold one per layer per level).
    for (auto& d : steps[steps.size() - 2].res.dirs) d.fd.reset();
    Step& s = steps.back();
    if (!s.res.found) {
      if (i + 1 < names.size()) failure = fmt::format("{}: {}", printable(s.path), s.reason);
      break;
    }
    if (i + 1 < names.size() && !S_ISDIR(s.res.st.st_mode)) {
      s.reason = fmt::format("{} is a {} in {}, not a directory{}", printable(s.path),
                             type_words(s.res.st.st_mode), layer_label(*stack, s.res.layer),
                             S_ISLNK(s.res.st.st_mode) ? " (symbolic links are not followed)" : "");
      failure = s.reason;
      break;
    }
  }
  const Step& last = steps.back();
  bool found = failure.empty() && last.res.found;

  if (args.json) {
    Json j;
    j.begin_object();
    j.field("path", full).field("found", found);
    if (found) {
      j.field("type", type_key(last.res.st.st_mode)).field("layer", last.res.layer);
      j.field("role", role_of(last.res.layer)).field("layer_dir", stack->layer(last.res.layer).path);
      j.field("real_path", last.lines[last.res.layer].real);
      j.key("data_layer");
      last.data_layer >= 0 ? j.value(last.data_layer) : j.null();
      j.key("merged_layers").begin_array();
      for (const auto& d : last.res.dirs) j.value(d.layer);
      j.end_array();
      j.key("reason").null().key("hidden_by").null();
    } else {
      j.key("type").null().key("layer").null().key("role").null().key("layer_dir").null().key("data_layer").null();
      j.key("real_path").null().key("merged_layers").null();
      j.field("reason", failure.empty() ? last.reason : failure);
      j.key("hidden_by");
      which.json_stop(j, last.hidden_by);
    }
    j.key("components").begin_array();
    for (const auto& s : steps) which.json_step(j, s);
    j.end_array();
    j.end_object();
    fmt::print("{}\n", j.str());
  } else {
    size_t from = args.verbose ? 0 : steps.size() - 1;
    for (size_t i = from; i < steps.size(); ++i) {
      const Step& s = steps[i];
      std::string head = which.headline(s);
      if (&s == &last && !failure.empty() && s.res.found) head += ", not a directory";
      fmt::print("{}: {}\n", printable(s.path), head);
      which.print_lines(s);
    }
    if (!failure.empty()) fmt::print("{}: not found: {}\n", printable(full), failure);
  }
  return found ? kExitOk : kExitNo;
}

}  // namespace strata::tool
