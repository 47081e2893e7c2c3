// See child_runner.h.
#include "cli/child_runner.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <vector>

#include "exmode/error.h"

namespace exmode::cli {
namespace {

struct Running {
  pid_t pid = -1;
  std::size_t index = 0;
  int out = -1;  // memory files the child's stdout and stderr were redirected to
  int err = -1;
};

std::string readAll(int fd) {
  std::string text;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) return text;
  text.resize(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::pread(fd, text.data() + got, text.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);
  return text;
}

[[noreturn]] void runChild(std::size_t index, int out, int err, unsigned char* note,
                           const std::function<int(std::size_t, unsigned char&)>& task) {
  int status = 1;
  if (::dup2(out, STDOUT_FILENO) >= 0 && ::dup2(err, STDERR_FILENO) >= 0) {
    try {
      status = task(index, *note);
    } catch (...) {
      std::cerr << "exmode: internal error: unexpected exception\n";
      status = 1;
    }
  }
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  // No exit handlers or static destructors: they belong to the parent.
  ::_exit(status);
}

// Starts the child for `index`, or returns nullopt with errno set when it cannot.
std::optional<Running> start(std::size_t index, unsigned char* note,
                             const std::function<int(std::size_t, unsigned char&)>& task) {
  Running child;
  child.index = index;
  child.out = ::memfd_create("exmode-stdout", MFD_CLOEXEC);
  child.err = child.out < 0 ? -1 : ::memfd_create("exmode-stderr", MFD_CLOEXEC);
  if (child.err < 0) {
    const int saved = errno;
    if (child.out >= 0) ::close(child.out);
    errno = saved;
    return std::nullopt;
  }
  // What the parent buffered would otherwise be written twice, once by each process.
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  child.pid = ::fork();
  if (child.pid == 0) runChild(index, child.out, child.err, note, task);
  if (child.pid < 0) {
    const int saved = errno;
    ::close(child.out);
    ::close(child.err);
    errno = saved;
    return std::nullopt;
  }
  return child;
}

ChildResult collect(Running& child, int wait_status, unsigned char note) {
  ChildResult result;
  if (WIFEXITED(wait_status)) {
    result.status = WEXITSTATUS(wait_status);
  } else {
    result.status = 1;
    result.signal = WIFSIGNALED(wait_status) ? WTERMSIG(wait_status) : 0;
  }
  result.note = note;
  result.out = readAll(child.out);
  result.err = readAll(child.err);
  ::close(child.out);
  ::close(child.err);
  return result;
}

}  // namespace

void runChildren(std::size_t count, unsigned jobs,
                 const std::function<int(std::size_t, unsigned char& note)>& task,
                 const std::function<void(std::size_t, ChildResult&)>& finished,
                 const std::function<void(std::size_t, std::size_t)>& progress) {
  if (count == 0) return;
  if (jobs == 0) jobs = 1;
  // One byte per file, shared with the children, for their notes.
  void* shared = ::mmap(nullptr, count, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) {
    throw Error(ErrorKind::kIo, std::string("cannot map memory for the results of the files: ") +
                                    std::strerror(errno));
  }
  auto* notes = static_cast<unsigned char*>(shared);

  std::vector<std::optional<ChildResult>> results(count);
  std::vector<Running> running;
  std::size_t next_start = 0;
  std::size_t next_report = 0;
  std::size_t done = 0;
  auto record = [&](std::size_t index, ChildResult result) {
    results[index] = std::move(result);
    ++done;
    while (next_report < count && results[next_report]) {
      finished(next_report, *results[next_report]);
      results[next_report].reset();  // the text is printed; do not keep it
      ++next_report;
    }
    progress(done, next_report);
  };

  while (next_report < count) {
    while (next_start < count && running.size() < jobs) {
      if (std::optional<Running> child = start(next_start, notes + next_start, task)) {
        running.push_back(*child);
        ++next_start;
        continue;
      }
      // No process or memory file to be had: wait for a running child to free one, or, with
      // none running, fail this file and go on with the next.
      if (!running.empty()) break;
      ChildResult failed;
      failed.status = 6;  // ErrorKind::kIo
      failed.not_run = std::strerror(errno);
      record(next_start++, std::move(failed));
    }
    if (running.empty()) continue;
    int wait_status = 0;
    const pid_t pid = ::waitpid(-1, &wait_status, 0);
    if (pid < 0 && errno == EINTR) continue;
    if (pid < 0) {
      // No child to wait for, which cannot be while `running` holds one: fail them all
      // rather than wait for ever.
      const std::string reason = std::strerror(errno);
      std::vector<Running> lost;
      lost.swap(running);
      for (Running& child : lost) {
        ::close(child.out);
        ::close(child.err);
        ChildResult failed;
        failed.status = 1;
        failed.not_run = "lost its process: " + reason;
        record(child.index, std::move(failed));
      }
      continue;
    }
    for (std::size_t i = 0; i < running.size(); ++i) {
      if (running[i].pid != pid) continue;
      Running child = running[i];
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
      record(child.index, collect(child, wait_status, notes[child.index]));
      break;
    }
  }
  ::munmap(shared, count);
}

}  // namespace exmode::cli
