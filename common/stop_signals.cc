#include "common/stop_signals.h"

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

extern "C" void OnIgnoredStopSignal(int) {
  if (g_noted.exchange(true, std::memory_order_relaxed)) return;
  ssize_t unused = write(STDERR_FILENO, g_ignored_note, g_ignored_note_size);
  (void)unused;
}

}  // namespace

void InstallStopSignals() {
  std::signal(SIGTERM, OnStopSignal);
  std::signal(SIGUSR1, OnStopSignal);
}

void IgnoreStopSignals() {
  const int n = std::snprintf(
      g_ignored_note, sizeof(g_ignored_note),
      "ips: parameter server (pid %d) got a stop signal and keeps serving: the workers checkpoint "
      "and stop the job when they get one (signal mpirun with SIGUSR1, or a worker)\n",
      static_cast<int>(getpid()));
  g_ignored_note_size = n > 0 ? std::min(static_cast<size_t>(n), sizeof(g_ignored_note) - 1) : 0;
  std::signal(SIGTERM, OnIgnoredStopSignal);
  std::signal(SIGUSR1, OnIgnoredStopSignal);
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

}  // namespace ips
