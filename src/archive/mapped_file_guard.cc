// The SIGBUS guard of mapped inputs; see mapped_file_guard.h.
//
// Everything the handler touches is a lock-free atomic in static storage, constant
// initialized, so it needs no allocation, no lock and no constructor to have run.
#include "archive/mapped_file_guard.h"

#include <errno.h>  // program_invocation_short_name
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>

namespace exmode::archive::guard {
namespace {

enum SlotState : int { kFree, kBusy, kLive };

// One map. A slot is claimed (kFree -> kBusy), filled, then published (kLive); the handler
// reads only kLive slots. Fields are atomics so that a slot being reused while the handler
// reads it is a stale value, not a data race.
struct MapSlot {
  std::atomic<int> state{kFree};
  std::atomic<std::uintptr_t> begin{0};
  std::atomic<std::size_t> size{0};
  std::atomic<const char*> path{nullptr};
};

static_assert(std::atomic<int>::is_always_lock_free);
static_assert(std::atomic<std::uintptr_t>::is_always_lock_free);
static_assert(std::atomic<std::size_t>::is_always_lock_free);
static_assert(std::atomic<const char*>::is_always_lock_free);
static_assert(std::atomic<bool>::is_always_lock_free);

constexpr std::size_t kNoSlot = kMaxTemporaryFiles;

MapSlot maps[kMaxMaps];
std::atomic<const char*> temporary_files[kMaxTemporaryFiles];
std::atomic<bool> exiting{false};
// The disposition before ours, written once before ours is installed.
struct sigaction previous {};
std::once_flag installed;

// Appends `text` to the line being built, dropping what does not fit.
void append(char* line, std::size_t& length, std::size_t capacity, const char* text) {
  while (*text != '\0' && length < capacity) line[length++] = *text++;
}

void writeLine(const char* path) {
  char line[4096 + 256];
  std::size_t length = 0;
  const std::size_t room = sizeof line - 1;  // the newline always fits
  append(line, length, room, program_invocation_short_name);
  append(line, length, room, ": ");
  append(line, length, room, path);
  append(line, length, room, ": changed or truncated while being read (a read of its map failed)");
  line[length++] = '\n';
  const char* at = line;
  while (length > 0) {
    const ssize_t written = ::write(STDERR_FILENO, at, length);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return;
    at += written;
    length -= static_cast<std::size_t>(written);
  }
}

[[noreturn]] void exitAfterBusError(const char* path) {
  // Another thread may fault in the same map at the same time: one line, one exit.
  if (exiting.exchange(true)) {
    for (;;) ::pause();
  }
  for (std::atomic<const char*>& file : temporary_files) {
    if (const char* name = file.load(std::memory_order_acquire)) ::unlink(name);
  }
  writeLine(path);
  ::_exit(kExitStatus);
}

// What would have happened without us: the previous handler, or the default action.
void forward(int number, siginfo_t* info, void* context) {
  if ((previous.sa_flags & SA_SIGINFO) != 0 && previous.sa_sigaction != nullptr) {
    previous.sa_sigaction(number, info, context);
    return;
  }
  if ((previous.sa_flags & SA_SIGINFO) == 0 && previous.sa_handler != SIG_DFL &&
      previous.sa_handler != SIG_IGN) {
    previous.sa_handler(number);
    return;
  }
  // A SIGBUS sent by kill() to a process that ignores it stays ignored; a fault cannot be.
  if ((previous.sa_flags & SA_SIGINFO) == 0 && previous.sa_handler == SIG_IGN && info != nullptr &&
      info->si_code <= 0) {
    return;
  }
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  ::sigaction(number, &default_action, nullptr);
  // Blocked while this handler runs, so it is delivered, with the default action, as the
  // handler returns; a fault would also recur on the faulting instruction.
  ::raise(number);
}

void onBusError(int number, siginfo_t* info, void* context) {
  // si_addr is meaningful only for faults the kernel raised (si_code > 0), not for kill().
  if (info != nullptr && info->si_code > 0) {
    if (const char* path = mappedFileAt(info->si_addr)) exitAfterBusError(path);
  }
  forward(number, info, context);
}

void install() {
  std::call_once(installed, [] {
    ::sigaction(SIGBUS, nullptr, &previous);
    struct sigaction action {};
    action.sa_sigaction = onBusError;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, nullptr);
  });
}

}  // namespace

bool registerMap(const void* begin, std::size_t size, const char* path) {
  install();
  for (MapSlot& slot : maps) {
    int expected = kFree;
    if (!slot.state.compare_exchange_strong(expected, kBusy, std::memory_order_acquire)) continue;
    slot.begin.store(reinterpret_cast<std::uintptr_t>(begin), std::memory_order_relaxed);
    slot.size.store(size, std::memory_order_relaxed);
    slot.path.store(path, std::memory_order_relaxed);
    slot.state.store(kLive, std::memory_order_release);
    return true;
  }
  return false;
}

void unregisterMap(const void* begin) {
  const auto at = reinterpret_cast<std::uintptr_t>(begin);
  for (MapSlot& slot : maps) {
    if (slot.state.load(std::memory_order_acquire) != kLive ||
        slot.begin.load(std::memory_order_relaxed) != at) {
      continue;
    }
    int expected = kLive;
    if (!slot.state.compare_exchange_strong(expected, kBusy, std::memory_order_acquire)) continue;
    slot.size.store(0, std::memory_order_relaxed);
    slot.path.store(nullptr, std::memory_order_relaxed);
    slot.state.store(kFree, std::memory_order_release);
    return;
  }
}

const char* mappedFileAt(const void* address) {
  const auto at = reinterpret_cast<std::uintptr_t>(address);
  for (const MapSlot& slot : maps) {
    if (slot.state.load(std::memory_order_acquire) != kLive) continue;
    const std::uintptr_t begin = slot.begin.load(std::memory_order_relaxed);
    const std::size_t size = slot.size.load(std::memory_order_relaxed);
    if (at >= begin && at - begin < size) return slot.path.load(std::memory_order_relaxed);
  }
  return nullptr;
}

TemporaryFileGuard::TemporaryFileGuard(const char* path) : slot_(kNoSlot) {
  install();
  for (std::size_t i = 0; i < kMaxTemporaryFiles; ++i) {
    const char* expected = nullptr;
    if (temporary_files[i].compare_exchange_strong(expected, path, std::memory_order_release)) {
      slot_ = i;
      return;
    }
  }
}

void TemporaryFileGuard::release() {
  if (slot_ == kNoSlot) return;
  temporary_files[slot_].store(nullptr, std::memory_order_release);
  slot_ = kNoSlot;
}

}  // namespace exmode::archive::guard
