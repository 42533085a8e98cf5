// ResultLine: the one machine-readable line that every benchmark and every `ips` command prints
// last on stdout: `RESULT <name> key=value key=value ...`.
//
// A process prints exactly one. A command that fails, or only prints its help, prints none of its
// own: launch/main.cc ends it with `RESULT <name> status=error exit=<code> error="<message>"` (or
// `RESULT <name> status=help`), from the state below: whether a RESULT line was printed already
// (a stopped `ips train` prints its `status=stopped` line and exits 3), the message of the error
// that ends the process, and, under mpirun, whether this rank is the one that prints it.
#ifndef IPS_COMMON_RESULT_LINE_H_
#define IPS_COMMON_RESULT_LINE_H_

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <string>

namespace ips {

namespace result_line_internal {

inline std::atomic<bool>& Printed() {
  static std::atomic<bool> printed{false};
  return printed;
}
inline std::atomic<bool>& Owner() {
  static std::atomic<bool> owner{true};
  return owner;
}
struct NotedError {
  std::mutex mu;
  std::string message;  // guarded by mu
};
inline NotedError& Noted() {
  static NotedError* noted = new NotedError;  // never destroyed: read until the process ends
  return *noted;
}

}  // namespace result_line_internal

// The longest value AddQuoted writes (bytes of the value, before escaping): a RESULT line stays
// one short write, which mpirun does not split between ranks' lines.
constexpr size_t kMaxQuotedResultValue = 1000;

// `"value"` with `\` and `"` escaped as \\ and \", \n \r \t as such and the other control bytes
// as \xHH, so that the value is one token ending at its closing quote; longer than
// kMaxQuotedResultValue bytes, it is cut there and ends in "...".
inline std::string QuoteResultValue(const std::string& value) {
  std::string v = value;
  if (v.size() > kMaxQuotedResultValue) v = v.substr(0, kMaxQuotedResultValue) + "...";
  std::string out = "\"";
  for (const char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          static const char kHex[] = "0123456789abcdef";
          out += "\\x";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

class ResultLine {
 public:
  explicit ResultLine(const std::string& name) { os_ << "RESULT " << name; }
  ResultLine& Add(const std::string& key, const std::string& value) {
    os_ << ' ' << key << '=' << value;
    return *this;
  }
  ResultLine& Add(const std::string& key, const char* value) {
    return Add(key, std::string(value));
  }
  ResultLine& Add(const std::string& key, int64_t value) { return Add(key, std::to_string(value)); }
  ResultLine& Add(const std::string& key, int value) { return Add(key, std::to_string(value)); }
  ResultLine& Add(const std::string& key, uint64_t value) {
    return Add(key, std::to_string(value));
  }
  ResultLine& Add(const std::string& key, double value) {
    std::ostringstream v;
    v.precision(6);
    v << value;
    return Add(key, v.str());
  }
  // key="value" (QuoteResultValue): for free text such as an error message, which may hold
  // spaces, quotes and '='.
  ResultLine& AddQuoted(const std::string& key, const std::string& value) {
    return Add(key, QuoteResultValue(value));
  }
  std::string str() const { return os_.str(); }
  // Prints the line to stdout and flushes; the process has printed its RESULT line then
  // (ResultLinePrinted).
  void Print() const {
    std::printf("%s\n", os_.str().c_str());
    std::fflush(stdout);
    result_line_internal::Printed().store(true);
  }

 private:
  std::ostringstream os_;
};

// Whether this process printed a RESULT line with ResultLine::Print.
inline bool ResultLinePrinted() { return result_line_internal::Printed().load(); }

// The process's finisher of its RESULT line (launch/main.cc sets it; none in a test binary):
// prints the run's line for exit code `code` when the command printed none, returns `code`.
using ResultFinisher = int (*)(int code);
inline std::atomic<ResultFinisher>& ResultFinisherSlot() {
  static std::atomic<ResultFinisher> finisher{nullptr};
  return finisher;
}
// Prints the run's RESULT line now rather than after the command returns (main.cc prints it
// then; without a finisher, nothing): a cluster rank must print before another rank's exit lets
// mpirun kill it. Returns `code`.
inline int FinishRunResult(int code) {
  const ResultFinisher finish = ResultFinisherSlot().load();
  return finish != nullptr ? finish(code) : code;
}

// Notes `message` (its first line) as the error that ends the process: the message of the error
// RESULT line. The last one noted wins: the error that ends a command is the one reported last.
// launch/main.cc notes every "error: <message>" line written to std::cerr, the commands' way of
// reporting an error (launch/commands.h); code that reports one otherwise notes it here.
inline void NoteResultError(const std::string& message) {
  auto& n = result_line_internal::Noted();
  std::lock_guard<std::mutex> lock(n.mu);
  n.message = message.substr(0, message.find('\n'));
}
// The last message noted ("" if none).
inline std::string NotedResultError() {
  auto& n = result_line_internal::Noted();
  std::lock_guard<std::mutex> lock(n.mu);
  return n.message;
}

// Under mpirun, `ips train` prints one RESULT line for the whole job, on one rank (worker 0:
// launch/cluster_train.h); the other ranks print no error RESULT line either. Every process
// prints its own until told otherwise.
inline void SetPrintsResultLine(bool prints) { result_line_internal::Owner().store(prints); }
inline bool PrintsResultLine() { return result_line_internal::Owner().load(); }

// Under mpirun, the world rank that prints the job's RESULT line (0 until told otherwise): a rank
// that sees it die and ends the job prints the line itself, without waiting for it
// (ps::AbortJob).
inline std::atomic<int>& ResultLineRankSlot() {
  static std::atomic<int> rank{0};
  return rank;
}
// Rank `result_rank` prints the job's RESULT line; this process (rank `own_rank`) prints it if it
// is that rank.
inline void SetResultLineRank(int result_rank, int own_rank) {
  ResultLineRankSlot().store(result_rank);
  SetPrintsResultLine(result_rank == own_rank);
}
inline int ResultLineRank() { return ResultLineRankSlot().load(); }

}  // namespace ips

#endif  // IPS_COMMON_RESULT_LINE_H_
