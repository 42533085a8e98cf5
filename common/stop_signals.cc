#include "common/stop_signals.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>

namespace ips {
namespace {

std::atomic<bool> g_stop_requested{false};
std::atomic<int> g_stop_signal{0};
// StopSignalFd's pipe (both ends non-blocking: a full pipe is readable already, and the handler
// must never block), created before the handler is installed.
std::atomic<int> g_stop_pipe_read{-1};
std::atomic<int> g_stop_pipe_write{-1};

extern "C" void OnStopSignal(int sig) {
  const int saved_errno = errno;  // write(2) may set it under the interrupted code's feet
  int none = 0;
  g_stop_signal.compare_exchange_strong(none, sig, std::memory_order_relaxed);
  g_stop_requested.store(true, std::memory_order_relaxed);
  const int fd = g_stop_pipe_write.load(std::memory_order_relaxed);
  if (fd >= 0) {
    const char byte = 1;
    ssize_t unused = write(fd, &byte, 1);
    (void)unused;
  }
  errno = saved_errno;
}

// Creates StopSignalFd's pipe once (the first InstallStopSignals, possibly from .preinit_array:
// nothing here needs more than the system calls).
void CreateStopPipe() {
  if (g_stop_pipe_read.load(std::memory_order_relaxed) >= 0) return;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return;  // no descriptor: the flag still works
  g_stop_pipe_write.store(fds[1], std::memory_order_relaxed);
  g_stop_pipe_read.store(fds[0], std::memory_order_relaxed);
}

// The server's note, formatted before the handler is installed (a handler may only write(2)).
char g_ignored_note[256];
size_t g_ignored_note_size = 0;
std::atomic<bool> g_noted{false};

void WriteIgnoredNote() {
  if (g_noted.exchange(true, std::memory_order_relaxed)) return;
  ssize_t unused = write(STDERR_FILENO, g_ignored_note, g_ignored_note_size);
  (void)unused;
}

extern "C" void OnIgnoredStopSignal(int) { WriteIgnoredNote(); }

// `handler` for SIGTERM and SIGUSR1, and SIGINT when `with_sigint` (SA_RESTART: a read or wait
// interrupted by the signal goes on; poll(2) returns EINTR all the same), then those unblocked in
// the calling thread: a signal pending while they were blocked is delivered to `handler` before
// this returns.
void SetStopSignalAction(void (*handler)(int), bool with_sigint = false) {
  struct sigaction sa = {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
  if (with_sigint) sigaction(SIGINT, &sa, nullptr);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGUSR1);
  if (with_sigint) sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_UNBLOCK, &stop, nullptr);
}

}  // namespace

void InstallStopSignals(bool with_sigint) {
  CreateStopPipe();
  SetStopSignalAction(OnStopSignal, with_sigint);
}

int StopSignalFd() { return g_stop_pipe_read.load(std::memory_order_relaxed); }

void IgnoreStopSignals() {
  const int n = std::snprintf(
      g_ignored_note, sizeof(g_ignored_note),
      "ips: parameter server (pid %d) got a stop signal and keeps serving: the workers checkpoint "
      "and stop the job when they get one (signal mpirun with SIGUSR1, or a worker)\n",
      static_cast<int>(getpid()));
  g_ignored_note_size = n > 0 ? std::min(static_cast<size_t>(n), sizeof(g_ignored_note) - 1) : 0;
  SetStopSignalAction(OnIgnoredStopSignal);
  // One that reached the stop handler before (`ips train` installs it first thing) is a stop
  // signal this server got and ignores too.
  if (g_stop_requested.load(std::memory_order_relaxed)) WriteIgnoredNote();
}

void DefaultStopSignals() {
  SetStopSignalAction(SIG_DFL);
  const int sig = g_stop_signal.load(std::memory_order_relaxed);
  if (sig != 0) std::raise(sig);
}

const std::atomic<bool>& StopRequested() { return g_stop_requested; }

const char* StopSignalName() {
  switch (g_stop_signal.load(std::memory_order_relaxed)) {
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGINT:
      return "SIGINT";
    default:
      return "a stop request";
  }
}

Status EvaluationAbandonedError() {
  return AbortedError("evaluation abandoned: a stop was requested");
}

bool IsEvaluationAbandoned(const Status& s) { return s.code() == StatusCode::kAborted; }

}  // namespace ips
