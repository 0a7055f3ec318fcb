#include "passthrough.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "strata/log.h"

namespace strata::fs {

namespace {

// Protocol constants of FUSE 7.40+ that libfuse 3.14's headers predate.
constexpr uint32_t kOpcodeInit = 26;
constexpr uint32_t kInitExt = 1u << 30;         // fuse_init_in/out.flags
constexpr uint32_t kWritebackCache = 1u << 16;  // fuse_init_out.flags
constexpr uint32_t kFlags2Passthrough = 1u << 5;  // FUSE_PASSTHROUGH = 1ULL << 37
constexpr uint32_t kOpenPassthrough = 1u << 7;    // FOPEN_PASSTHROUGH
constexpr uint32_t kOpenDirectIo = 1u << 0;       // FOPEN_DIRECT_IO

// Offsets: fuse_in_header is 40 bytes, fuse_out_header 16.
constexpr size_t kInHeader = 40;
constexpr size_t kInitInFlags = kInHeader + 12, kInitInFlags2 = kInHeader + 16;
constexpr size_t kInitOutFlags = 12, kInitOutFlags2 = 32, kInitOutMaxStackDepth = 36, kInitOutSize = 64;
constexpr size_t kOpenOutSize = 16, kOpenOutFlags = 8, kOpenOutBackingId = 12;

struct BackingMap {  // struct fuse_backing_map
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
constexpr unsigned long kIocBackingOpen = _IOW(229, 1, BackingMap);
constexpr unsigned long kIocBackingClose = _IOW(229, 2, uint32_t);

// libfuse sends each reply synchronously from the thread that made it: thread-locals carry the
// intent from the handler to the writev hook.
thread_local bool t_patch_init = false;
// The io hooks' userdata is the session's (our Daemon), not ours: find ourselves here instead.
Passthrough* g_self = nullptr;
thread_local int t_backing_id = 0;

uint32_t load32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void store32(void* p, uint32_t v) { std::memcpy(p, &v, 4); }

// Byte `off` of the body spread over iov[1..count).
uint8_t* body_at(struct iovec* iov, int count, size_t off) {
  for (int i = 1; i < count; ++i) {
    if (off < iov[i].iov_len) return static_cast<uint8_t*>(iov[i].iov_base) + off;
    off -= iov[i].iov_len;
  }
  return nullptr;
}

size_t body_size(struct iovec* iov, int count) {
  size_t n = 0;
  for (int i = 1; i < count; ++i) n += iov[i].iov_len;
  return n;
}

void patch32(struct iovec* iov, int count, size_t off, uint32_t set, uint32_t clear) {
  // Fields never straddle iovecs in libfuse's replies (one buffer per body); check anyway.
  uint8_t* p = body_at(iov, count, off);
  uint8_t* end = body_at(iov, count, off + 3);
  if (!p || end != p + 3) return;
  store32(p, (load32(p) | set) & ~clear);
}

}  // namespace

void Passthrough::install(struct fuse_session* se, bool wanted, int stack_depth) {
  g_self = this;
  devfd_ = fuse_session_fd(se);
  wanted_ = wanted;
  stack_depth_ = stack_depth;
  if (!wanted) {
    // Without passthrough there is nothing to patch: keep libfuse's own /dev/fuse io.
    why_not_ = "off (-o passthrough=off)";
    return;
  }
  struct fuse_custom_io io;
  std::memset(&io, 0, sizeof io);
  io.read = on_read;
  io.writev = on_writev;
  io.splice_receive = on_splice_receive;
  io.splice_send = on_splice_send;
  if (fuse_session_custom_io(se, &io, devfd_) != 0) {
    why_not_ = "libfuse refused the custom io";
    wanted_ = false;
  }
}

void Passthrough::negotiate(struct fuse_conn_info* conn) {
  if (!wanted_) return;
  if (!offered_) {
    why_not_ = "the kernel does not offer FUSE passthrough (needs Linux 6.9+, CONFIG_FUSE_PASSTHROUGH)";
    return;
  }
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;  // the kernel refuses passthrough with writeback cache
  t_patch_init = true;
  usable_ = true;
  why_not_.clear();
}

int Passthrough::open_backing(int fd) {
  if (!usable()) return -EOPNOTSUPP;
  BackingMap map{fd, 0, 0};
  int id = ::ioctl(devfd_, kIocBackingOpen, &map);
  if (id > 0) return id;
  int err = id < 0 ? errno : EIO;
  if (err == EPERM && usable_.exchange(false)) {
    why_not_ = "the kernel refused a backing file (EPERM: the daemon lacks CAP_SYS_ADMIN in the "
               "initial user namespace, e.g. rootless)";
    log_error("passthrough: off for this mount: {}; using normal FUSE reads and writes", why_not_);
  }
  return -err;
}

void Passthrough::close_backing(int backing_id) {
  uint32_t id = backing_id;
  ::ioctl(devfd_, kIocBackingClose, &id);
}

void Passthrough::arm_reply(int backing_id) { t_backing_id = backing_id; }
void Passthrough::disarm_reply() { t_backing_id = 0; }

ssize_t Passthrough::on_read(int fd, void* buf, size_t len, void*) {
  ssize_t n = ::read(fd, buf, len);
  if (n >= ssize_t(kInitInFlags2 + 4) && load32(static_cast<uint8_t*>(buf) + 4) == kOpcodeInit) {
    Passthrough* self = g_self;
    const auto* p = static_cast<uint8_t*>(buf);
    bool ext = load32(p + kInitInFlags) & kInitExt;
    self->offered_ = ext && (load32(p + kInitInFlags2) & kFlags2Passthrough);
  }
  return n;
}

ssize_t Passthrough::on_writev(int fd, struct iovec* iov, int count, void*) {
  Passthrough* self = g_self;
  if (count >= 2 && iov[0].iov_len >= 16) {
    int32_t error;
    std::memcpy(&error, static_cast<uint8_t*>(iov[0].iov_base) + 4, 4);
    if (t_patch_init) {
      t_patch_init = false;
      if (error == 0 && body_size(iov, count) >= kInitOutSize) {
        patch32(iov, count, kInitOutFlags, kInitExt, kWritebackCache);
        patch32(iov, count, kInitOutFlags2, kFlags2Passthrough, 0);
        if (uint8_t* p = body_at(iov, count, kInitOutMaxStackDepth)) store32(p, uint32_t(self->stack_depth_));
      } else {
        self->usable_ = false;
        self->why_not_ = "INIT reply could not be patched";
      }
    } else if (t_backing_id > 0) {
      int id = t_backing_id;
      t_backing_id = 0;
      size_t size = body_size(iov, count);
      if (error == 0 && size >= kOpenOutSize) {
        // fuse_open_out is the last 16 bytes of both the open and the create reply.
        size_t base = size - kOpenOutSize;
        patch32(iov, count, base + kOpenOutFlags, kOpenPassthrough, kOpenDirectIo);
        if (uint8_t* p = body_at(iov, count, base + kOpenOutBackingId)) store32(p, uint32_t(id));
      }
    }
  }
  return ::writev(fd, iov, count);
}

ssize_t Passthrough::on_splice_receive(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                                       unsigned flags, void*) {
  return ::splice(fdin, offin, fdout, offout, len, flags);
}

ssize_t Passthrough::on_splice_send(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                                    unsigned flags, void*) {
  return ::splice(fdin, offin, fdout, offout, len, flags);
}

}  // namespace strata::fs
