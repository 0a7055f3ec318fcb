// Kernel FUSE passthrough (Linux >= 6.9) from a libfuse 3.14 daemon. libfuse 3.14 knows nothing of
// it, so this module patches the protocol on its way through a custom io: the INIT reply asks for
// passthrough, and an open/create reply carries a backing id. Its interface is shaped like
// libfuse 3.17's (fuse_passthrough_open/close, a "capable" flag) so it can be swapped for the
// real API when a newer libfuse is the build target. Nothing else knows about reply layouts.
// See ../shared/passthrough.md for the measurements and the kernel's rules.
#pragma once
#include <fuse_lowlevel.h>

#include <atomic>
#include <string>

namespace strata::fs {

class Passthrough {
 public:
  // After fuse_session_mount(): route /dev/fuse traffic through our hooks. `wanted` is
  // -o passthrough=auto; `stack_depth` is 1, or 2 when a layer lives on an overlay.
  void install(struct fuse_session* se, bool wanted, int stack_depth);
  // From the init callback: request passthrough in the INIT reply if the kernel offers it.
  void negotiate(struct fuse_conn_info* conn);

  // Negotiated and not (yet) refused: try open_backing for regular files.
  bool usable() const { return usable_.load(std::memory_order_relaxed); }
  const std::string& why_not() const { return why_not_; }
  // Register `fd` as a backing file: a backing id > 0, or -errno. EPERM (no CAP_SYS_ADMIN in
  // the initial user namespace) switches passthrough off for the mount.
  int open_backing(int fd);
  void close_backing(int backing_id);
  // The next open/create reply this thread sends is a passthrough one using `backing_id`.
  static void arm_reply(int backing_id);
  static void disarm_reply();

 private:
  static ssize_t on_read(int fd, void* buf, size_t len, void* unused);
  static ssize_t on_writev(int fd, struct iovec* iov, int count, void* unused);
  static ssize_t on_splice_receive(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                                   unsigned flags, void* self);
  static ssize_t on_splice_send(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                                unsigned flags, void* self);

  int devfd_ = -1;
  bool wanted_ = false;
  int stack_depth_ = 1;
  std::atomic<bool> offered_{false};   // the kernel's INIT had FUSE_PASSTHROUGH
  std::atomic<bool> usable_{false};
  std::string why_not_ = "not negotiated";
};

}  // namespace strata::fs
