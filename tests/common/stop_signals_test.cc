// common/stop_signals.h: a training process's SIGTERM/SIGUSR1 set the stop flag and name the
// first signal; a parameter server survives both and says so once on stderr.
#include "common/stop_signals.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
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

}  // namespace
}  // namespace ips
