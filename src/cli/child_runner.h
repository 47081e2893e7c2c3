// Runs one task per file, each in a child process of its own, a few at a time.
//
// A process, not a thread: the library's SIGBUS guard (src/archive/mapped_file_guard.cc) is
// process-wide, and when a mapped input is truncated under it, it removes every registered
// temporary file and ends the process. In a thread pool one shrinking file would end every
// other file's switch with it; in a child it ends that child only. A crash, an abort or a
// leak in one file's work cannot reach another's either.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace exmode::cli {

struct ChildResult {
  int status = 0;          // the child's exit status; 1 when a signal ended it
  int signal = 0;          // the signal that ended it, or 0
  unsigned char note = 0;  // what the task left in its note (runChildren's `task`)
  std::string out;         // all it wrote to stdout
  std::string err;         // all it wrote to stderr
  // Why no child ran the task (fork or memfd_create failed: the errno text), or empty.
  std::string not_run;
};

// Calls task(i, note) for every i in [0, count) in a forked child, at most `jobs` children
// at a time; the child exits with task's return value, and what it sets `note` to reaches
// the parent. Its stdout and stderr go to memory files, read when it ends, so that a child
// never blocks on a full pipe and each file's output stays in one piece. finished(i, result)
// is called in the order of i, as soon as every result up to i is in; progress(done, next)
// after each child ends, with the number ended and the first i whose result is not in yet.
// When no process can be started even with none running, that file's result has status 6
// (kIo) and not_run set, and the next file is tried. Throws Error(kIo) if the memory shared
// for the notes cannot be had. The caller must be single-threaded (fork copies only the
// calling thread).
void runChildren(std::size_t count, unsigned jobs,
                 const std::function<int(std::size_t, unsigned char& note)>& task,
                 const std::function<void(std::size_t, ChildResult&)>& finished,
                 const std::function<void(std::size_t done, std::size_t next)>& progress);

}  // namespace exmode::cli
