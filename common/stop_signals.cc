#include "common/stop_signals.h"

#include <csignal>

namespace ips {
namespace {

std::atomic<bool> g_stop_requested{false};
std::atomic<int> g_stop_signal{0};

extern "C" void OnStopSignal(int sig) {
  int none = 0;
  g_stop_signal.compare_exchange_strong(none, sig, std::memory_order_relaxed);
  g_stop_requested.store(true, std::memory_order_relaxed);
}

}  // namespace

void InstallStopSignals() {
  std::signal(SIGTERM, OnStopSignal);
  std::signal(SIGUSR1, OnStopSignal);
}

void IgnoreStopSignals() {
  std::signal(SIGTERM, SIG_IGN);
  std::signal(SIGUSR1, SIG_IGN);
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
