// Launching `mpirun` from the MPI tests (tests/ps/*), shared so that every test runs it, captures
// it and reads its output the same way: RunMpi / RunMpiSelf (timed, killed by `timeout`, stdout
// and stderr captured apart), Field (a key=value of a line such as `RESULT ...`), ScratchDir (a
// per-test directory), and the two-part main() of a binary that launches itself under mpirun
// (MpiTestMain, with the --name=value arguments of its cases in CaseArg / CaseIntArg).
#ifndef IPS_TESTS_TESTING_MPI_RUN_H_
#define IPS_TESTS_TESTING_MPI_RUN_H_

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/timer.h"
#include "ps/checkpoint_io.h"

#ifndef IPS_MPIEXEC
#error "IPS_MPIEXEC must name the mpirun executable"
#endif

namespace ips::testing {

// $TMPDIR, or /tmp.
inline std::string TempRoot() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr ? tmp : "/tmp";
}

inline std::string ReadFile(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

// This test binary's own path (for mpirun to launch it).
inline std::string SelfPath() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

struct MpiRun {
  int exit_code = -1;  // 128 + signal when killed; 124 when `timeout` ended it
  double seconds = 0;
  std::string out;     // every rank's stdout (RESULT lines), never interleaved with logs
  std::string err;     // every rank's stderr
  std::string output;  // err, then out: for failure messages and searches of either
};

// One mpirun's files: its captured stdout and stderr and its own session directory. Each
// mpirun gets its own session directory: two mpiruns started at once (ctest -j2) race creating
// the shared default /tmp/ompi.<host>.<uid>, and the loser fails with "mkdir ... File exists"
// before any rank runs.
struct MpiRunFiles {
  std::string base;  // base.out, base.err, base.ompi

  MpiRunFiles() {
    static int runs = 0;  // a process's runs are sequential; concurrent processes differ by pid
    base = TempRoot() + "/ips_mpi_run_" + std::to_string(getpid()) + "_" + std::to_string(runs++);
  }
  std::string session() const { return base + ".ompi"; }
  // `mpirun --allow-run-as-root --oversubscribe MPIRUN_FLAGS -np NP PROGRAM ARGS >out 2>err`.
  // stdout and stderr are captured apart: mpirun forwards each rank's streams in chunks, so a
  // log line of one rank may land inside another rank's stdout line when both go to one pipe.
  std::string Command(const std::string& program, int np, const std::string& args,
                      const std::string& mpirun_flags) const {
    return IPS_MPIEXEC " --allow-run-as-root --oversubscribe --mca orte_tmpdir_base " + session() +
           " " + mpirun_flags + " -np " + std::to_string(np) + " " + program + " " + args + " >" +
           base + ".out 2>" + base + ".err";
  }
  // Fills r's captured streams from the files, then removes them.
  void Collect(MpiRun* r) const {
    r->out = ReadFile(base + ".out");
    r->err = ReadFile(base + ".err");
    r->output = r->err + "---- stdout ----\n" + r->out;
    std::remove((base + ".out").c_str());
    std::remove((base + ".err").c_str());
    (void)std::system(("rm -rf " + session()).c_str());
  }
};

inline int ExitCodeOf(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// `timeout mpirun ...` (MpiRunFiles::Command), waited for.
inline MpiRun RunMpi(const std::string& program, int np, const std::string& args, int timeout_s,
                     const std::string& mpirun_flags = "") {
  const MpiRunFiles files;
  const std::string cmd = "mkdir -p " + files.session() + " && timeout -k 10 " +
                          std::to_string(timeout_s) + " " +
                          files.Command(program, np, args, mpirun_flags);
  MpiRun r;
  Timer timer;
  r.exit_code = ExitCodeOf(std::system(cmd.c_str()));
  r.seconds = timer.Seconds();
  files.Collect(&r);
  return r;
}

// mpirun as RunMpi, but once `ready()` holds (polled every 20 ms) `act(pid of mpirun)` runs,
// once; then waited for. mpirun runs in its own process group, which is SIGKILLed (ranks
// included) when timeout_s passes; exit_code is then 124. ready() never holding before mpirun
// exits: act does not run.
inline MpiRun RunMpiActing(const std::string& program, int np, const std::string& args,
                           const std::function<bool()>& ready,
                           const std::function<void(pid_t)>& act, int timeout_s,
                           const std::string& mpirun_flags = "") {
  const MpiRunFiles files;
  const std::string cmd =
      "mkdir -p " + files.session() + " && exec " + files.Command(program, np, args, mpirun_flags);
  MpiRun r;
  Timer timer;
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  EXPECT_GT(pid, 0) << "fork failed";
  if (pid <= 0) return r;
  bool acted = false;
  int status = 0;
  for (;;) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      r.exit_code = ExitCodeOf(status);
      break;
    }
    if (timer.Seconds() > timeout_s) {
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      r.exit_code = 124;
      break;
    }
    if (!acted && ready()) {
      act(pid);
      acted = true;
    }
    usleep(20000);
  }
  r.seconds = timer.Seconds();
  files.Collect(&r);
  return r;
}

// RunMpiActing that sends `sig` to the mpirun process itself, as a user or a scheduler stops a
// job.
inline MpiRun RunMpiSignalled(const std::string& program, int np, const std::string& args, int sig,
                              const std::function<bool()>& ready, int timeout_s,
                              const std::string& mpirun_flags = "") {
  return RunMpiActing(
      program, np, args, ready, [sig](pid_t mpirun) { kill(mpirun, sig); }, timeout_s,
      mpirun_flags);
}

// The pid of MPI rank `rank` among the children of process `parent` (mpirun on one host starts
// the ranks itself), found by the OMPI_COMM_WORLD_RANK in their environment; -1 if none.
inline pid_t RankPid(pid_t parent, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return -1;
  pid_t found = -1;
  while (dirent* e = readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    // /proc/PID/stat: "PID (comm) STATE PPID ...", comm may hold spaces: read after the last ')'.
    const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    int ppid = -1;
    char state = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2 || ppid != parent)
      continue;
    const std::string env = ReadFile("/proc/" + std::to_string(pid) + "/environ");
    size_t at = 0;
    for (size_t end; at < env.size(); at = end + 1) {
      end = env.find('\0', at);
      if (end == std::string::npos) end = env.size();
      if (env.compare(at, end - at, want) == 0) found = pid;
    }
    if (found > 0) break;
  }
  closedir(proc);
  return found;
}

// The lines of `text` (a run's stdout) that start with "RESULT ".
inline std::vector<std::string> ResultLines(const std::string& text) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    if (text.compare(at, 7, "RESULT ") == 0) out.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

// RunMpi of this test binary (its mpirun side: see MpiTestMain).
inline MpiRun RunMpiSelf(int np, const std::string& args, int timeout_s = 60,
                         const std::string& mpirun_flags = "") {
  return RunMpi(SelfPath(), np, args, timeout_s, mpirun_flags);
}

// The value of `key=` on the first line of `out` that starts with `prefix` (empty if absent).
inline std::string Field(const std::string& out, const std::string& prefix,
                         const std::string& key) {
  size_t pos = 0;
  while ((pos = out.find(prefix, pos)) != std::string::npos) {
    if (pos == 0 || out[pos - 1] == '\n') {
      const size_t end = out.find('\n', pos);
      const std::string line = out.substr(pos, end - pos);
      const size_t k = line.find(" " + key + "=");
      if (k == std::string::npos) return "";
      const size_t b = k + key.size() + 2;
      return line.substr(b, line.find(' ', b) - b);
    }
    ++pos;
  }
  return "";
}

// A per-test scratch directory (under $TMPDIR, named after the process and `name`), emptied
// first and removed at the end.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(TempRoot() + "/ips_test_" + std::to_string(getpid()) + "_" + name) {
    ps::RemoveTree(path_);
    EXPECT_TRUE(ps::MakeDirs(path_).ok()) << path_;
  }
  ~ScratchDir() { ps::RemoveTree(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  // Writes `text` to the file `name` in the directory; returns its path.
  std::string Write(const std::string& name, const std::string& text) const {
    const std::string file = *this / name;
    FILE* f = std::fopen(file.c_str(), "w");
    EXPECT_NE(f, nullptr) << file;
    if (f != nullptr) {
      EXPECT_EQ(std::fwrite(text.data(), 1, text.size(), f), text.size()) << file;
      std::fclose(f);
    }
    return file;
  }

 private:
  std::string path_;
};

// The --name=value arguments of the process (set by MpiTestMain).
inline std::map<std::string, std::string>& CaseArgs() {
  static std::map<std::string, std::string> args;
  return args;
}
inline std::string CaseArg(const std::string& name, const std::string& def) {
  auto it = CaseArgs().find(name);
  return it == CaseArgs().end() ? def : it->second;
}
inline int64_t CaseIntArg(const std::string& name, int64_t def) {
  auto it = CaseArgs().find(name);
  return it == CaseArgs().end() ? def : std::stoll(it->second);
}

// The main() of a test binary that launches itself under mpirun: with --mpi_case=NAME (the
// mpirun side, on every rank) it returns cases[NAME]() (2 for an unknown case), otherwise it runs
// the gtest tests.
inline int MpiTestMain(int argc, char** argv,
                       const std::map<std::string, std::function<int()>>& cases) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos)
      CaseArgs()[a.substr(2, eq - 2)] = a.substr(eq + 1);
  }
  const std::string mpi_case = CaseArg("mpi_case", "");
  if (!mpi_case.empty()) {
    auto it = cases.find(mpi_case);
    if (it != cases.end()) return it->second();
    std::fprintf(stderr, "unknown --mpi_case=%s\n", mpi_case.c_str());
    return 2;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

}  // namespace ips::testing

#endif  // IPS_TESTS_TESTING_MPI_RUN_H_
