// The signals that ask a training run to stop after a checkpoint: SIGTERM (a user, a scheduler)
// and SIGUSR1. SIGUSR1 exists for mpirun: Open MPI forwards it to every rank and waits for them,
// whereas a SIGTERM sent to mpirun is followed by SIGKILL after odls_base_sigkill_timeout (1 s),
// too soon for a checkpoint of large tables to be written. The handler only sets flags
// (async-signal safe); the training loops poll StopRequested() between steps, and the evaluations
// between batches (an evaluation abandoned for a stop ends the run as a stop between two steps).
//
// `ips train` installs the handler first thing in main() (launch/main.cc), so a signal that
// arrives while the run is still loading its config and data is not fatal: the run stops after
// its first step. A process started with SIGTERM/SIGUSR1 blocked (a launcher that must not lose a
// stop sent before the program could handle it) gets them unblocked once the handler is in place,
// and a pending one is delivered then.
//
// `ips serve` takes SIGINT too (InstallStopSignals(/*with_sigint=*/true), also first thing in
// main()): a server's stop is its normal end, from a supervisor (SIGTERM) or a terminal (Ctrl-C).
// A loop that blocks on input waits in poll(2) on its descriptor and StopSignalFd(), which the
// handler makes readable, so a stop ends the wait at once without a timeout or busy polling.
#ifndef IPS_COMMON_STOP_SIGNALS_H_
#define IPS_COMMON_STOP_SIGNALS_H_

#include <atomic>

#include "common/status.h"

namespace ips {

// Installs the stop handler for SIGTERM and SIGUSR1, and SIGINT when `with_sigint` (process-wide;
// idempotent) and unblocks them in the calling thread, so that one sent while they were blocked
// is handled now. Creates StopSignalFd() first.
void InstallStopSignals(bool with_sigint = false);
// A descriptor that becomes readable when a stop signal reaches the stop handler (the read end of
// a pipe the handler writes a byte into; nobody reads it, so it stays readable), for poll(2) next
// to a blocking input; -1 before InstallStopSignals. The handler runs in whichever thread the
// kernel picks, so a thread waiting for input learns of the stop from this, not from EINTR.
int StopSignalFd();
// A parameter server's SIGTERM and SIGUSR1: it keeps serving (the workers shut it down after
// their checkpoint, which needs it) and says so once on stderr, so that a stop signal sent to a
// server alone is not silently lost. A stop signal that reached the stop handler before this call
// (the early one of `ips train`) is noted now. Unblocks them as InstallStopSignals.
void IgnoreStopSignals();
// The default action (termination) again for SIGTERM and SIGUSR1, for a process that has no stop
// to offer (a cluster run without checkpoint.dir); a stop signal that already reached the stop
// handler is raised again, so it ends the process as it would have without that handler.
void DefaultStopSignals();
// Set once a stop signal arrived (the flag a RunCheckpointing::stop points at).
const std::atomic<bool>& StopRequested();
// "SIGTERM", "SIGUSR1" or "SIGINT": the first stop signal received ("a stop request" before any).
const char* StopSignalName();

// An evaluation that takes a stop flag (worker/trainer.h EvaluateRanking, worker/seq_trainer.h
// EvaluateSeqRanking, worker/retrieval.h EvaluateRetrieval) checks it between two batches, and
// once it is set gives up with EvaluationAbandonedError (ABORTED; IsEvaluationAbandoned tells it
// from other errors): the model and tables are only read, so the training state is still the
// step boundary before the evaluation, and the run checkpoints and stops as between two steps.
inline bool StopSet(const std::atomic<bool>* stop) {
  return stop != nullptr && stop->load(std::memory_order_relaxed);
}
Status EvaluationAbandonedError();
bool IsEvaluationAbandoned(const Status& s);

}  // namespace ips

#endif  // IPS_COMMON_STOP_SIGNALS_H_
