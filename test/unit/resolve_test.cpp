// resolve_child: which layer answers for a name, by the kernel overlayfs rules, on layers written
// the way the kernel and image tools write them.
#include <climits>

#include <catch2/catch.hpp>

#include "layer_tree.h"
#include "strata/resolve.h"
#include "strata/whiteout.h"

using strata::LayerVerdict;
using strata::OpaqueKind;
using strata::Resolution;
using strata::resolve_child;
using strata::resolve_root;
using test::make_dir;
using test::make_whiteout;
using test::set_xattr;
using test::write_file;

namespace {

using Verdicts = std::vector<std::pair<int, LayerVerdict::Kind>>;

Verdicts verdicts(const Resolution& res) {
  Verdicts out;
  for (const auto& v : res.trail) out.emplace_back(v.layer, v.kind);
  return out;
}

std::vector<int> dir_layers(const Resolution& res) {
  std::vector<int> out;
  for (const auto& d : res.dirs) out.push_back(d.layer);
  return out;
}

// Resolve `name` in the merged directory `parent` with the trail on; real errors fail the test.
Resolution resolve(const strata::LayerStack& stack, const strata::DirView& parent, std::string_view name) {
  auto r = resolve_child(stack, parent, name, true);
  INFO("resolve " << name << ": " << test::errname(r));
  REQUIRE(r.has_value());
  return std::move(*r);
}

}  // namespace

TEST_CASE("resolve_child: upper over lower1 over lower2", "[resolve]") {
  TempDir t;
  test::make_layers(t, 2);
  write_file(t / "upper/top", "upper");
  write_file(t / "lower1/top", "lower1");
  write_file(t / "lower2/top", "lower2");
  write_file(t / "lower1/mid", "lower1");
  write_file(t / "lower2/mid", "lower2");
  write_file(t / "lower2/low", "lower2");
  auto stack = test::open_stack(t, 2);
  auto root = resolve_root(*stack);
  REQUIRE(root.has_value());
  CHECK(dir_layers(*root) == std::vector<int>{0, 1, 2});
  auto view = test::view_of(*root);

  struct Case {
    const char* name;
    int layer;
    const char* dir;
  };
  for (Case c : {Case{"top", 0, "upper"}, Case{"mid", 1, "lower1"}, Case{"low", 2, "lower2"}}) {
    INFO(c.name);
    Resolution res = resolve(*stack, view, c.name);
    REQUIRE(res.found);
    CHECK(res.layer == c.layer);
    CHECK(res.st.st_ino == test::lstat_of(t / (std::string(c.dir) + "/" + c.name)).st_ino);
    CHECK(res.dirs.empty());
  }
  SECTION("the trail names every layer visited until the answer") {
    CHECK(verdicts(resolve(*stack, view, "top")) == Verdicts{{0, LayerVerdict::Found}});
    CHECK(verdicts(resolve(*stack, view, "low")) ==
          Verdicts{{0, LayerVerdict::Absent}, {1, LayerVerdict::Absent}, {2, LayerVerdict::Found}});
    Resolution none = resolve(*stack, view, "nowhere");
    CHECK_FALSE(none.found);
    CHECK(verdicts(none) ==
          Verdicts{{0, LayerVerdict::Absent}, {1, LayerVerdict::Absent}, {2, LayerVerdict::Absent}});
  }
  SECTION("no trail unless asked") {
    auto r = resolve_child(*stack, view, "low", false);
    REQUIRE(r.has_value());
    CHECK(r->found);
    CHECK(r->trail.empty());
  }
}

TEST_CASE("resolve_child: non-directories hide, directories merge", "[resolve]") {
  TempDir t;
  test::make_layers(t, 2);
  // A file in the upper hides a directory below.
  write_file(t / "upper/x", "file");
  write_file(t / "lower1/x/inside", "hidden");
  // A directory merges with the directories below.
  write_file(t / "upper/d/from-upper", "");
  write_file(t / "lower1/d/from-lower1", "");
  write_file(t / "lower2/d/from-lower2", "");
  // A non-directory below a directory is not merged, and stops the search.
  make_dir(t / "upper/nd");
  write_file(t / "lower1/nd", "file");
  write_file(t / "lower2/nd/below", "");
  auto stack = test::open_stack(t, 2);
  auto root = resolve_root(*stack);
  REQUIRE(root.has_value());
  auto view = test::view_of(*root);

  SECTION("non-dir on top") {
    Resolution res = resolve(*stack, view, "x");
    REQUIRE(res.found);
    CHECK(S_ISREG(res.st.st_mode));
    CHECK(res.layer == 0);
    CHECK(res.dirs.empty());
    CHECK(verdicts(res) == Verdicts{{0, LayerVerdict::Found}});
  }
  SECTION("directory in three layers") {
    Resolution res = resolve(*stack, view, "d");
    REQUIRE(res.found);
    CHECK(S_ISDIR(res.st.st_mode));
    CHECK(res.layer == 0);
    CHECK(res.st.st_ino == test::lstat_of(t / "upper/d").st_ino);
    CHECK(dir_layers(res) == std::vector<int>{0, 1, 2});
    CHECK(res.merged);
    CHECK(res.lower_path == "d");
    auto d = test::view_of(res);
    for (auto [name, layer] : {std::pair{"from-upper", 0}, {"from-lower1", 1}, {"from-lower2", 2}}) {
      INFO(name);
      Resolution child = resolve(*stack, d, name);
      CHECK(child.found);
      CHECK(child.layer == layer);
    }
  }
  SECTION("file below a directory is not merged and stops the search") {
    Resolution res = resolve(*stack, view, "nd");
    REQUIRE(res.found);
    CHECK(dir_layers(res) == std::vector<int>{0});
    CHECK_FALSE(res.merged);
    CHECK(verdicts(res) == Verdicts{{0, LayerVerdict::Found}, {1, LayerVerdict::NotMerged}});
    CHECK(res.trail[1].type == S_IFREG);
    CHECK_FALSE(resolve(*stack, test::view_of(res), "below").found);
  }
}

TEST_CASE("resolve_child: whiteouts hide the name in their layer and below", "[resolve][whiteout]") {
  TempDir t;
  test::make_layers(t, 2);
  make_whiteout(t / "upper/w");
  write_file(t / "lower1/w", "hidden");
  write_file(t / "lower2/w", "hidden");
  make_whiteout(t / "lower1/w2");
  write_file(t / "lower2/w2", "hidden");
  write_file(t / "upper/w3", "visible");  // a whiteout below the answer changes nothing
  make_whiteout(t / "lower1/w3");
  make_dir(t / "upper/dw");  // a whiteout below a directory ends the merge there
  make_whiteout(t / "lower1/dw");
  write_file(t / "lower2/dw/hidden", "");
  write_file(t / "lower1/.wh.a", "");  // aufs/OCI whiteout
  write_file(t / "lower2/a", "hidden");
  write_file(t / "upper/.wh.b", "");
  write_file(t / "lower1/b/c", "hidden");
  auto stack = test::open_stack(t, 2);
  auto root = resolve_root(*stack);
  REQUIRE(root.has_value());
  auto view = test::view_of(*root);

  SECTION("char-device whiteout in the upper") {
    Resolution res = resolve(*stack, view, "w");
    CHECK_FALSE(res.found);
    CHECK(verdicts(res) == Verdicts{{0, LayerVerdict::Whiteout}});
  }
  SECTION("char-device whiteout in a middle lower") {
    Resolution res = resolve(*stack, view, "w2");
    CHECK_FALSE(res.found);
    CHECK(verdicts(res) == Verdicts{{0, LayerVerdict::Absent}, {1, LayerVerdict::Whiteout}});
  }
  SECTION("whiteout below the top object") {
    Resolution res = resolve(*stack, view, "w3");
    REQUIRE(res.found);
    CHECK(res.layer == 0);
  }
  SECTION("whiteout below a directory") {
    Resolution res = resolve(*stack, view, "dw");
    REQUIRE(res.found);
    CHECK(dir_layers(res) == std::vector<int>{0});
    CHECK_FALSE(res.merged);
    CHECK(verdicts(res) == Verdicts{{0, LayerVerdict::Found}, {1, LayerVerdict::Whiteout}});
  }
  SECTION(".wh.NAME file in a lower") {
    Resolution res = resolve(*stack, view, "a");
    CHECK_FALSE(res.found);
    CHECK(verdicts(res) == Verdicts{{0, LayerVerdict::Absent}, {1, LayerVerdict::AufsWhiteout}});
  }
  SECTION(".wh.NAME file in the upper hides a lower directory") {
    Resolution res = resolve(*stack, view, "b");
    CHECK_FALSE(res.found);
    CHECK(verdicts(res) == Verdicts{{0, LayerVerdict::AufsWhiteout}});
  }
  SECTION("lower_has_name sees through the upper, not through whiteouts") {
    CHECK(strata::lower_has_name(*stack, view, "w"));    // only the upper whites it out
    CHECK_FALSE(strata::lower_has_name(*stack, view, "w2"));
    CHECK_FALSE(strata::lower_has_name(*stack, view, "a"));
    CHECK(strata::lower_has_name(*stack, view, "b"));
    CHECK_FALSE(strata::lower_has_name(*stack, view, "nowhere"));
  }
}

TEST_CASE("resolve_child: opaque directories stop the merge", "[resolve][whiteout]") {
  TempDir t;
  test::make_layers(t, 2);
  write_file(t / "upper/o1/u", "");
  set_xattr(t / "upper/o1", "trusted.overlay.opaque", "y");
  write_file(t / "lower1/o1/hidden", "");
  write_file(t / "lower1/o2/l1", "");
  set_xattr(t / "lower1/o2", "user.overlay.opaque", "y");
  write_file(t / "lower2/o2/hidden", "");
  write_file(t / "upper/o3/.wh..wh..opq", "");
  write_file(t / "lower1/o3/hidden", "");
  // "x" marks a directory holding opaque whiteouts (kernel xwhiteouts), not an opaque one.
  make_dir(t / "upper/o4");
  set_xattr(t / "upper/o4", "trusted.overlay.opaque", "x");
  write_file(t / "lower1/o4/shown", "");
  auto stack = test::open_stack(t, 2);
  auto root = resolve_root(*stack);
  REQUIRE(root.has_value());
  auto view = test::view_of(*root);

  struct Case {
    const char* name;
    int layer;
    OpaqueKind kind;
  };
  for (Case c : {Case{"o1", 0, OpaqueKind::TrustedXattr}, Case{"o2", 1, OpaqueKind::UserXattr},
                 Case{"o3", 0, OpaqueKind::AufsMarker}}) {
    INFO(c.name);
    Resolution res = resolve(*stack, view, c.name);
    REQUIRE(res.found);
    CHECK(dir_layers(res) == std::vector<int>{c.layer});
    CHECK_FALSE(res.merged);
    REQUIRE_FALSE(res.trail.empty());
    CHECK(res.trail.back().layer == c.layer);
    CHECK(res.trail.back().kind == LayerVerdict::Opaque);
    CHECK(res.trail.back().detail == strata::describe(c.kind));
    CHECK(strata::read_dir_markers(res.dirs.front().fd.get()).opaque == c.kind);
    CHECK_FALSE(resolve(*stack, test::view_of(res), "hidden").found);
  }
  SECTION("opaque=x merges") {
    Resolution res = resolve(*stack, view, "o4");
    CHECK(dir_layers(res) == std::vector<int>{0, 1});
    CHECK(resolve(*stack, test::view_of(res), "shown").found);
  }
}

TEST_CASE("resolve_child: names that never resolve", "[resolve][whiteout]") {
  TempDir t;
  test::make_layers(t, 1);
  write_file(t / "lower1/.wh.gone", "");
  write_file(t / "lower1/.wh.visible-looking", "");
  write_file(t / "lower1/d/.wh..wh..opq", "");
  auto stack = test::open_stack(t, 1);
  auto root = resolve_root(*stack);
  REQUIRE(root.has_value());
  auto view = test::view_of(*root);

  SECTION(".wh. markers are not entries") {
    for (const char* name : {".wh.gone", ".wh.visible-looking", ".wh.", ".wh.nothing"}) {
      INFO(name);
      auto r = resolve_child(*stack, view, name, true);
      REQUIRE(r.has_value());
      CHECK_FALSE(r->found);
    }
    Resolution d = resolve(*stack, view, "d");
    CHECK_FALSE(resolve(*stack, test::view_of(d), ".wh..wh..opq").found);
  }
  SECTION("a 256-byte name is ENAMETOOLONG, a 255-byte one is just absent") {
    auto too_long = resolve_child(*stack, view, std::string(NAME_MAX + 1, 'n'), false);
    REQUIRE_FALSE(too_long.has_value());
    CHECK(too_long.error() == ENAMETOOLONG);
    auto longest = resolve_child(*stack, view, std::string(NAME_MAX, 'n'), false);
    REQUIRE(longest.has_value());
    CHECK_FALSE(longest->found);
  }
}

TEST_CASE("resolve_child: a redirect sends the lower search to another path", "[resolve]") {
  TempDir t;
  test::make_layers(t, 2);
  // A merged directory /old/path renamed to /new: the upper keeps the redirect.
  write_file(t / "upper/new/from-upper", "");
  set_xattr(t / "upper/new", "trusted.overlay.redirect", "/old/path");
  write_file(t / "lower1/old/path/from-lower1", "");
  write_file(t / "lower2/old/path/from-lower2", "");
  write_file(t / "lower1/new/decoy", "");  // what the name itself has below: not merged
  // A relative redirect (rename inside one directory) names the old sibling.
  make_dir(t / "upper/renamed");
  set_xattr(t / "upper/renamed", "trusted.overlay.redirect", "orig");
  write_file(t / "lower1/orig/o1", "");
  write_file(t / "lower2/orig/o2", "");
  auto stack = test::open_stack(t, 2);
  auto root = resolve_root(*stack);
  REQUIRE(root.has_value());
  auto view = test::view_of(*root);

  SECTION("absolute") {
    Resolution res = resolve(*stack, view, "new");
    REQUIRE(res.found);
    CHECK(res.layer == 0);
    CHECK(dir_layers(res) == std::vector<int>{0, 1, 2});
    CHECK(res.lower_path == "old/path");
    CHECK(res.merged);
    CHECK(verdicts(res) ==
          Verdicts{{0, LayerVerdict::Redirect}, {1, LayerVerdict::Found}, {2, LayerVerdict::Found}});
    CHECK(res.trail[0].detail == "/old/path");
    auto dir = test::view_of(res);
    CHECK(resolve(*stack, dir, "from-upper").layer == 0);
    CHECK(resolve(*stack, dir, "from-lower1").layer == 1);
    CHECK(resolve(*stack, dir, "from-lower2").layer == 2);
    CHECK_FALSE(resolve(*stack, dir, "decoy").found);
  }
  SECTION("relative") {
    Resolution res = resolve(*stack, view, "renamed");
    REQUIRE(res.found);
    CHECK(dir_layers(res) == std::vector<int>{0, 1, 2});
    CHECK(res.lower_path == "orig");
    CHECK(resolve(*stack, test::view_of(res), "o2").layer == 2);
  }
  SECTION("user.overlay.redirect is honoured too") {
    make_dir(t / "upper/user-new");
    set_xattr(t / "upper/user-new", "user.overlay.redirect", "/old/path");
    Resolution res = resolve(*stack, view, "user-new");
    CHECK(dir_layers(res) == std::vector<int>{0, 1, 2});
  }
}

TEST_CASE("resolve_child: a redirect never leads outside its layer", "[resolve]") {
  // Redirects are xattrs anyone who can write a layer (an image author) controls: "..", "." and
  // symlinks in them must not merge anything from beside or above a layer into the mount.
  TempDir t;
  test::make_layers(t, 1);
  write_file(t / "outside/secret", "host file");
  write_file(t / "outside/x/secret", "host file");
  REQUIRE(::symlink((t / "outside").c_str(), (t / "lower1/link").c_str()) == 0);
  write_file(t / "lower1/real/inner", "");
  const char* hostile[] = {"/../outside", "/..", "..", "../outside", "/real/../../outside", "/.", ".",
                           "/link/x", "/link", "link", "real/inner"};
  const size_t count = std::size(hostile);
  for (size_t i = 0; i < count; ++i) {
    std::string name = "evil" + std::to_string(i);
    const char* target = hostile[i];
    make_dir(t / ("upper/" + name));
    set_xattr(t / ("upper/" + name), "trusted.overlay.redirect", target);
  }
  auto stack = test::open_stack(t, 1);
  auto root = resolve_root(*stack);
  REQUIRE(root.has_value());
  auto view = test::view_of(*root);

  for (size_t i = 0; i < count; ++i) {
    std::string name = "evil" + std::to_string(i);
    const char* target = hostile[i];
    INFO(name << " redirect " << target);
    auto res = resolve_child(*stack, view, name, true);
    REQUIRE(res.has_value());
    REQUIRE(res->found);
    CHECK(res->layer == 0);
    auto dir = test::view_of(*res);
    for (const char* child : {"secret", "x", "real", "lower1", "inner"}) {
      INFO(child);
      auto c = resolve_child(*stack, dir, child, false);
      REQUIRE(c.has_value());
      CHECK_FALSE(c->found);
    }
    for (size_t d = 1; d < res->dirs.size(); ++d) {
      struct stat st {};
      REQUIRE(::fstat(res->dirs[d].fd.get(), &st) == 0);
      CHECK(st.st_ino != test::lstat_of(t / "outside").st_ino);
      CHECK(st.st_ino != test::lstat_of(t / "lower1").st_ino);
      CHECK(st.st_ino != test::lstat_of(t.path()).st_ino);
    }
  }
}
