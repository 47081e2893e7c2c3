// What happens when a mapped input shrinks under exmode: another process truncates the
// archive while its map is being read. The kernel then raises SIGBUS on the next read of a
// page past the new end, which would kill the process with no message and leave its
// temporary output file behind.
//
// The reader registers each map it makes, and rewriteArchive its temporary file, in
// fixed-size lock-free tables. A SIGBUS handler, installed with the first registration,
// looks the faulting address up: inside a registered map, it removes every registered
// temporary file, writes one line `<program>: <file>: changed or truncated while being
// read` to stderr and exits with status 6 (ErrorKind::kIo), doing only async-signal-safe
// things. Any other SIGBUS goes to the handler that was there before (a sanitizer's, a
// host's), or kills the process as if no handler had been installed.
//
// Limits: a table holds kMaxMaps maps and kMaxTemporaryFiles files; beyond that a map or
// file is not guarded (the old behaviour). A handler another component installs later
// without chaining to ours disables the guard. Within the program a bus error is final:
// the process exits, which is the CLI's behaviour for any I/O error and still what a
// library host would get without the guard, minus the leftover file and the silence.
#pragma once

#include <cstddef>

#include "exmode/error.h"

namespace exmode::archive::guard {

inline constexpr std::size_t kMaxMaps = 64;
inline constexpr std::size_t kMaxTemporaryFiles = 64;
// The exit status after a bus error in a registered map.
inline constexpr int kExitStatus = static_cast<int>(ErrorKind::kIo);

// Registers [begin, begin + size), a read-only map of the file named `path`; `path` must
// stay valid until unregisterMap(begin). Installs the handler on first use. Returns false,
// leaving the map unguarded, when the table is full.
bool registerMap(const void* begin, std::size_t size, const char* path);
// Forgets the map starting at `begin`; call before unmapping it.
void unregisterMap(const void* begin);

// The file name of the registered map holding `address`, or null. A write(2) from a map
// whose file shrank fails with EFAULT instead of raising SIGBUS: this tells which input it was.
const char* mappedFileAt(const void* address);

// A temporary file removed by the handler if a bus error stops the process while it exists.
// `path` must outlive the guard. Unguarded when the table is full.
class TemporaryFileGuard {
 public:
  explicit TemporaryFileGuard(const char* path);
  ~TemporaryFileGuard() { release(); }
  TemporaryFileGuard(const TemporaryFileGuard&) = delete;
  TemporaryFileGuard& operator=(const TemporaryFileGuard&) = delete;

  // The file is no longer ours to remove (renamed into place, or removed already).
  void release();

 private:
  std::size_t slot_;
};

}  // namespace exmode::archive::guard
