// common/stop_signals.h: a training process's SIGTERM/SIGUSR1 set the stop flag and name the
// first signal (also one pending while they were blocked); a parameter server survives both and
// says so once on stderr (also for one that came before it ignored them); without a stop to offer
// they end the process; an abandoned evaluation's status is recognised.
#include "common/stop_signals.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace ips {
namespace {

TEST(StopSignals, TermAndUsr1SetTheFlagAndTheFirstIsNamed) {
  EXPECT_FALSE(StopRequested().load());
  EXPECT_STREQ(StopSignalName(), "a stop request");
  InstallStopSignals();
  ASSERT_EQ(std::raise(SIGUSR1), 0);
  EXPECT_TRUE(StopRequested().load());
  EXPECT_STREQ(StopSignalName(), "SIGUSR1");
  ASSERT_EQ(std::raise(SIGTERM), 0);  // handled, not fatal; the first signal stays named
  EXPECT_STREQ(StopSignalName(), "SIGUSR1");
}

TEST(StopSignals, ServerKeepsRunningAndSaysSoOnce) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    IgnoreStopSignals();
    std::raise(SIGUSR1);
    std::raise(SIGTERM);
    std::raise(SIGUSR1);
    _exit(7);  // still alive after all three
  }
  close(fds[1]);
  std::string err;
  char buf[512];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) err.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 7);
  const std::string note = "parameter server (pid " + std::to_string(pid) + ") got a stop signal";
  const size_t at = err.find(note);
  EXPECT_NE(at, std::string::npos) << err;
  EXPECT_EQ(err.find(note, at + 1), std::string::npos) << "said more than once: " << err;
  EXPECT_NE(err.find("signal mpirun with SIGUSR1"), std::string::npos) << err;
}

// The cases below run in a fresh process each (a "threadsafe" death test re-executes the test
// binary), since the handlers and the flags are process-wide and the tests above set them.

// A stop signal pending while blocked (a launcher that starts `ips train` with them blocked, so
// that none sent before the handler exists is lost) is delivered once the handler is installed.
TEST(StopSignals, OnePendingWhileBlockedIsHandledOnInstall) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        sigset_t usr1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        sigprocmask(SIG_BLOCK, &usr1, nullptr);
        std::raise(SIGUSR1);  // pending
        const bool before = StopRequested().load();
        InstallStopSignals();
        std::_Exit(!before && StopRequested().load() && std::string(StopSignalName()) == "SIGUSR1"
                       ? 0
                       : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// `ips train` installs the stop handler first thing; a server that got a stop signal before it
// turned to IgnoreStopSignals says so right then, and not again for a later one (exit 7: said
// once; 8: not said by IgnoreStopSignals; 9: said again).
TEST(StopSignals, ServerNotesAStopSignalThatCameBeforeIt) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        int fds[2];
        if (pipe(fds) != 0 || fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0) std::_Exit(1);
        const int saved = dup(STDERR_FILENO);
        dup2(fds[1], STDERR_FILENO);
        auto notes = [&] {  // the notes written so far
          static std::string err;
          char buf[512];
          ssize_t n;
          while ((n = read(fds[0], buf, sizeof(buf))) > 0) err.append(buf, static_cast<size_t>(n));
          int count = 0;
          for (size_t at = err.find("keeps serving"); at != std::string::npos;
               at = err.find("keeps serving", at + 1))
            ++count;
          return count;
        };
        InstallStopSignals();
        std::raise(SIGTERM);
        IgnoreStopSignals();
        const int at_ignore = notes();
        std::raise(SIGUSR1);
        const int after = notes();
        dup2(saved, STDERR_FILENO);
        std::_Exit(at_ignore != 1 ? 8 : after != 1 ? 9 : 7);
      },
      ::testing::ExitedWithCode(7), "");
}

// A rank with no stop to offer (a cluster run without checkpoint.dir) gets the default action
// back: a signal that reached the early handler ends it at once, a later one when it arrives.
TEST(StopSignals, DefaultStopSignalsEndsTheProcessAsWithoutTheHandler) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        InstallStopSignals();
        std::raise(SIGUSR1);
        DefaultStopSignals();
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGUSR1), "");
  EXPECT_EXIT(
      {
        InstallStopSignals();
        DefaultStopSignals();
        std::raise(SIGTERM);
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGTERM), "");
}

TEST(StopSignals, AnAbandonedEvaluationIsToldFromOtherErrors) {
  EXPECT_TRUE(IsEvaluationAbandoned(EvaluationAbandonedError()));
  EXPECT_TRUE(IsEvaluationAbandoned(EvaluationAbandonedError().WithContext("epoch 2")));
  EXPECT_FALSE(IsEvaluationAbandoned(InternalError("x")));
  EXPECT_FALSE(IsEvaluationAbandoned(Status::Ok()));
  EXPECT_FALSE(StopSet(nullptr));
  std::atomic<bool> stop{false};
  EXPECT_FALSE(StopSet(&stop));
  stop = true;
  EXPECT_TRUE(StopSet(&stop));
}

}  // namespace
}  // namespace ips
