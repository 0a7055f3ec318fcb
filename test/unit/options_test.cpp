// parse_option_string: the -o syntax podman, mount(8) and fuse-overlayfs users already write.
#include <catch2/catch.hpp>

#include "strata/options.h"

using strata::MountOptions;
using strata::parse_option_string;
using strata::split_lowerdir;

using Strings = std::vector<std::string>;

TEST_CASE("lowerdir is split on unescaped colons", "[options]") {
  MountOptions o;
  SECTION("plain list, uppermost first") {
    REQUIRE(parse_option_string("lowerdir=/a:/b:/c", o));
    CHECK(o.lowerdirs == Strings{"/a", "/b", "/c"});
  }
  SECTION("\\: keeps a colon inside a layer path") {
    REQUIRE(parse_option_string(R"(lowerdir=/x\:y:/z)", o));
    CHECK(o.lowerdirs == Strings{"/x:y", "/z"});
  }
  SECTION("\\, keeps a comma, which otherwise ends the option") {
    REQUIRE(parse_option_string(R"(lowerdir=/a\,b:/c,upperdir=/u,workdir=/w)", o));
    CHECK(o.lowerdirs == Strings{"/a,b", "/c"});
    CHECK(o.upperdir == "/u");
    CHECK(o.workdir == "/w");
  }
  SECTION("\\\\ keeps a backslash") {
    CHECK(split_lowerdir(R"(/a\\:/b)") == Strings{R"(/a\)", "/b"});
  }
  SECTION("an empty layer between colons is an error naming the value") {
    auto r = parse_option_string("lowerdir=/a::/b", o);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error(), Catch::Contains("lowerdir") && Catch::Contains("/a::/b"));
  }
  SECTION("a later lowerdir replaces an earlier one") {
    REQUIRE(parse_option_string("lowerdir=/a", o));
    REQUIRE(parse_option_string("lowerdir=/b:/c", o));
    CHECK(o.lowerdirs == Strings{"/b", "/c"});
  }
  SECTION("lowerdir without a value is an error") {
    auto r = parse_option_string("lowerdir=", o);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error(), Catch::Contains("lowerdir"));
  }
}

TEST_CASE("empty option elements are accepted", "[options]") {
  MountOptions o;
  SECTION("a,,b") {
    REQUIRE(parse_option_string("lowerdir=/l,,upperdir=/u", o));
    CHECK(o.lowerdirs == Strings{"/l"});
    CHECK(o.upperdir == "/u");
  }
  SECTION("trailing and leading commas") {
    REQUIRE(parse_option_string(",lowerdir=/l,workdir=/w,", o));
    CHECK(o.lowerdirs == Strings{"/l"});
    CHECK(o.workdir == "/w");
  }
  SECTION("nothing at all") {
    REQUIRE(parse_option_string("", o));
    CHECK(o.lowerdirs.empty());
  }
}

TEST_CASE("an unknown option is an error that names it", "[options]") {
  MountOptions o;
  for (auto [text, name] : {std::pair{"bogus", "'bogus'"},
                            std::pair{"lowerdir=/l,frobnicate=3", "'frobnicate'"},
                            std::pair{"volatile=1", "'volatile'"}}) {  // a flag given a value
    INFO(text);
    auto r = parse_option_string(text, o);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error(), Catch::Contains(name));
  }
}

TEST_CASE("metacopy=on|off sets metadata-only copy-up; anything else is refused", "[options]") {
  MountOptions o;
  CHECK_FALSE(o.metacopy);
  REQUIRE(parse_option_string("metacopy=on", o));
  CHECK(o.metacopy);
  REQUIRE(parse_option_string("metacopy=off", o));
  CHECK_FALSE(o.metacopy);
  auto r = parse_option_string("metacopy=yes", o);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error(), Catch::Contains("metacopy 'yes'"));
}

TEST_CASE("ACLs are enforced unless noacl", "[options]") {
  MountOptions o;
  REQUIRE(parse_option_string("lowerdir=/l", o));
  CHECK(o.acl);
  REQUIRE(parse_option_string("noacl", o));
  CHECK_FALSE(o.acl);
  CHECK(o.ignored.empty());
}

TEST_CASE("fuse-overlayfs and mount(8) options are accepted without effect", "[options]") {
  MountOptions o;
  const char* text =
      "lowerdir=/l,static_nlink,noacl,xattr_permissions=2,fast_ino=1,plugins=/p.so,noxattrs=1,"
      "redirect_dir=on,index=off,xino=off,userxattr,defaults,_netdev,x-systemd.automount";
  auto r = parse_option_string(text, o);
  INFO((r ? "" : r.error()));
  REQUIRE(r);
  CHECK(o.lowerdirs == Strings{"/l"});
  CHECK(o.ignored.size() == 12);
  CHECK(std::find(o.ignored.begin(), o.ignored.end(), "plugins=/p.so") != o.ignored.end());
  CHECK(o.fuse_options.empty());
  CHECK_FALSE(o.acl);  // noacl has an effect: ACLs stay stored but unchecked

  SECTION("options libfuse understands are handed through, ro is remembered") {
    REQUIRE(parse_option_string("allow_other,fsname=strata,ro,nosuid", o));
    CHECK(o.fuse_options == Strings{"allow_other", "fsname=strata", "ro", "nosuid"});
    CHECK(o.read_only);
    REQUIRE(parse_option_string("rw", o));
    CHECK_FALSE(o.read_only);
  }
}

TEST_CASE("fuse-overlayfs id mapping options are parsed", "[options]") {
  MountOptions o;
  REQUIRE(parse_option_string("uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:65536,squash_to_root", o));
  REQUIRE(o.uid_ranges.size() == 2);
  CHECK(o.uid_ranges[1].disk == 1);
  CHECK(o.uid_ranges[1].shown == 100000);
  CHECK(o.uid_ranges[1].length == 65536);
  REQUIRE(o.gid_ranges.size() == 1);
  CHECK(o.squash_to_root);
  REQUIRE(parse_option_string("squash_to_uid=7,squash_to_gid=8", o));
  CHECK(o.squash_uid == 7u);
  CHECK(o.squash_gid == 8u);
  for (const char* text : {"uidmapping=0:1000", "squash_to_uid=x"}) {
    INFO(text);
    auto r = parse_option_string(text, o);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error(), Catch::Contains(std::string(text).substr(0, std::string(text).find('='))));
  }
}

TEST_CASE("timeout is a non-negative number of seconds", "[options]") {
  MountOptions o;
  CHECK(o.timeout == 86400);
  SECTION("integer") {
    REQUIRE(parse_option_string("timeout=5", o));
    CHECK(o.timeout == 5);
  }
  SECTION("fraction") {
    REQUIRE(parse_option_string("timeout=0.25", o));
    CHECK(o.timeout == Approx(0.25));
  }
  SECTION("zero turns caching off") {
    REQUIRE(parse_option_string("timeout=0", o));
    CHECK(o.timeout == 0);
  }
  SECTION("garbage, negative and empty are refused, naming the option") {
    for (const char* text : {"timeout=abc", "timeout=5s", "timeout=-1", "timeout="}) {
      INFO(text);
      auto r = parse_option_string(text, o);
      REQUIRE_FALSE(r);
      CHECK_THAT(r.error(), Catch::Contains("timeout"));
    }
    CHECK(o.timeout == 86400);
  }
}

TEST_CASE("volatile and fsync=0 skip fsync", "[options]") {
  MountOptions o;
  CHECK_FALSE(o.volatile_mode);
  SECTION("volatile") {
    REQUIRE(parse_option_string("volatile", o));
    CHECK(o.volatile_mode);
  }
  SECTION("fsync=0, and fsync=1 turns it back on") {
    REQUIRE(parse_option_string("fsync=0", o));
    CHECK(o.volatile_mode);
    REQUIRE(parse_option_string("fsync=1", o));
    CHECK_FALSE(o.volatile_mode);
  }
  SECTION("fsync takes only 0 or 1") {
    auto r = parse_option_string("fsync=2", o);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error(), Catch::Contains("fsync"));
  }
}

TEST_CASE("trace options are checked", "[options]") {
  MountOptions o;
  REQUIRE(parse_option_string("trace=lookup+copyup,trace_format=json,trace_file=/t\\,x", o));
  CHECK(o.trace == "lookup+copyup");
  CHECK(o.trace_format == "json");
  CHECK(o.trace_file == "/t,x");
  auto r = parse_option_string("trace_format=xml", o);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error(), Catch::Contains("xml"));
}
