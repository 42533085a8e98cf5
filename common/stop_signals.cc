#include "common/stop_signals.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>

namespace ips {
namespace {

std::atomic<bool> g_stop_requested{false};
std::atomic<int> g_stop_signal{0};

extern "C" void OnStopSignal(int sig) {
  int none = 0;
  g_stop_signal.compare_exchange_strong(none, sig, std::memory_order_relaxed);
  g_stop_requested.store(true, std::memory_order_relaxed);
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

// `handler` for SIGTERM and SIGUSR1 (SA_RESTART: a read or wait interrupted by the signal goes
// on), then both unblocked in the calling thread: a signal pending while they were blocked is
// delivered to `handler` before this returns.
void SetStopSignalAction(void (*handler)(int)) {
  struct sigaction sa = {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGUSR1);
  pthread_sigmask(SIG_UNBLOCK, &stop, nullptr);
}

}  // namespace

void InstallStopSignals() { SetStopSignalAction(OnStopSignal); }

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
    default:
      return "a stop request";
  }
}

Status EvaluationAbandonedError() {
  return AbortedError("evaluation abandoned: a stop was requested");
}

bool IsEvaluationAbandoned(const Status& s) { return s.code() == StatusCode::kAborted; }

}  // namespace ips
