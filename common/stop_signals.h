// The signals that ask a training run to stop after a checkpoint: SIGTERM (a user, a scheduler)
// and SIGUSR1. SIGUSR1 exists for mpirun: Open MPI forwards it to every rank and waits for them,
// whereas a SIGTERM sent to mpirun is followed by SIGKILL after odls_base_sigkill_timeout (1 s),
// too soon for a checkpoint of large tables to be written. The handler only sets flags
// (async-signal safe); the training loops poll StopRequested() between steps.
#ifndef IPS_COMMON_STOP_SIGNALS_H_
#define IPS_COMMON_STOP_SIGNALS_H_

#include <atomic>

namespace ips {

// Installs the stop handler for SIGTERM and SIGUSR1 (process-wide; idempotent).
void InstallStopSignals();
// A parameter server's SIGTERM and SIGUSR1: it keeps serving (the workers shut it down after
// their checkpoint, which needs it) and says so once on stderr, so that a stop signal sent to a
// server alone is not silently lost.
void IgnoreStopSignals();
// Set once a stop signal arrived (the flag a RunCheckpointing::stop points at).
const std::atomic<bool>& StopRequested();
// "SIGTERM" or "SIGUSR1": the first stop signal received ("a stop request" before any).
const char* StopSignalName();

}  // namespace ips

#endif  // IPS_COMMON_STOP_SIGNALS_H_
