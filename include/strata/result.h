// Result<T>: a value or an errno. Core functions never throw across module boundaries on the
// hot path; they return Result and the FUSE edge turns the errno into exactly one reply.
#pragma once
#include <cerrno>
#include <expected>

namespace strata {

template <class T>
using Result = std::expected<T, int>;

// Result<void> spelled for readability.
using Status = std::expected<void, int>;

inline std::unexpected<int> fail(int err) { return std::unexpected<int>(err); }
// The current errno as a failure; never 0 (a failing syscall that forgot errno becomes EIO).
inline std::unexpected<int> fail_errno() { return std::unexpected<int>(errno ? errno : EIO); }

}  // namespace strata

// Propagate a failure from an expression of type Result<...> (a statement, not an expression).
#define STRATA_TRY(expr)                                            \
  do {                                                              \
    if (auto strata_try_r_ = (expr); !strata_try_r_)                \
      return ::strata::fail(strata_try_r_.error());                 \
  } while (0)
