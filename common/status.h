// Status and StatusOr<T>: the error type that crosses every module boundary in interest-ps.
//
// A Status is either OK or carries a code and a human-readable message that names what failed
// (file, line, record, field). Functions return Status/StatusOr instead of throwing; glog CHECK
// is kept for programmer errors. This header has no dependencies beyond the standard library so
// that the kernels library builds with CUDA + GoogleTest alone.
#ifndef IPS_COMMON_STATUS_H_
#define IPS_COMMON_STATUS_H_

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <utility>

namespace ips {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // bad user input: config, flags, data records
  kNotFound,         // missing file, key or entry
  kDataLoss,         // corrupt or truncated data (CRC mismatch, short read)
  kFailedPrecondition,
  kOutOfRange,
  kUnimplemented,    // e.g. a CUDA kernel in a build without CUDA
  kInternal,
  kUnavailable,      // device or peer not reachable
  kResourceExhausted,
  kAborted,
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: <message>" or "OK".
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>", for adding the file or record.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline std::ostream& operator<<(std::ostream& os, const Status& s) { return os << s.ToString(); }

inline Status InvalidArgumentError(std::string m) {
  return Status(StatusCode::kInvalidArgument, std::move(m));
}
inline Status NotFoundError(std::string m) { return Status(StatusCode::kNotFound, std::move(m)); }
inline Status DataLossError(std::string m) { return Status(StatusCode::kDataLoss, std::move(m)); }
inline Status FailedPreconditionError(std::string m) {
  return Status(StatusCode::kFailedPrecondition, std::move(m));
}
inline Status OutOfRangeError(std::string m) {
  return Status(StatusCode::kOutOfRange, std::move(m));
}
inline Status UnimplementedError(std::string m) {
  return Status(StatusCode::kUnimplemented, std::move(m));
}
inline Status InternalError(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }
inline Status UnavailableError(std::string m) {
  return Status(StatusCode::kUnavailable, std::move(m));
}
inline Status ResourceExhaustedError(std::string m) {
  return Status(StatusCode::kResourceExhausted, std::move(m));
}
inline Status AbortedError(std::string m) { return Status(StatusCode::kAborted, std::move(m)); }

// The code of a system call that failed with errno `err`, so that a file error says what the user
// can do about it: NOT_FOUND for a path that does not exist (ENOENT; ENOTDIR: a component is a
// file), INVALID_ARGUMENT for one that cannot name what was asked for (EISDIR, ENAMETOOLONG,
// ELOOP), RESOURCE_EXHAUSTED for a full disk, quota or file table (ENOSPC, EDQUOT, EMFILE,
// ENFILE), and FAILED_PRECONDITION for the rest (EACCES, EPERM, EROFS, ETXTBSY, ...: a path that
// may not be written, as for an unwritable checkpoint.dir).
StatusCode StatusCodeFromErrno(int err);
// "<message>: <strerror(err)>" with StatusCodeFromErrno's code; `message` names the path and
// the operation ("cannot open --metrics_out file 'F'"). err 0 (a failure that set no errno):
// "<message>: no reason given", FAILED_PRECONDITION.
Status StatusFromErrno(int err, const std::string& message);

// Holds either a value or a non-OK Status. Accessing value() of an error aborts (programmer
// error), so callers check ok() first or use IPS_ASSIGN_OR_RETURN.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  // Initialised, not assigned: nvcc warns on discarding operator='s [[nodiscard]] Status&.
  StatusOr(const Status& status)  // NOLINT: implicit by design
      : status_(status.ok() ? Status(StatusCode::kInternal, "StatusOr constructed from an OK Status")
                            : status) {}
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  T& value() & {
    CheckOk();
    return *value_;
  }
  const T& value() const& {
    CheckOk();
    return *value_;
  }
  T&& value() && {
    CheckOk();
    return std::move(*value_);
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void CheckOk() const {
    if (!status_.ok()) {
      std::cerr << "StatusOr::value() on error: " << status_.ToString() << std::endl;
      std::abort();
    }
  }
  Status status_;
  std::optional<T> value_;
};

}  // namespace ips

#define IPS_STATUS_CONCAT_INNER(a, b) a##b
#define IPS_STATUS_CONCAT(a, b) IPS_STATUS_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define IPS_RETURN_IF_ERROR(expr)                      \
  do {                                                 \
    ::ips::Status _ips_status = (expr);                \
    if (!_ips_status.ok()) return _ips_status;         \
  } while (0)

// `IPS_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a StatusOr or returns its error.
#define IPS_ASSIGN_OR_RETURN(lhs, expr) \
  IPS_ASSIGN_OR_RETURN_IMPL(IPS_STATUS_CONCAT(_ips_statusor_, __LINE__), lhs, expr)
#define IPS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

#endif  // IPS_COMMON_STATUS_H_
