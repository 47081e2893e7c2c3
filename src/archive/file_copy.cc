// copyRange() and writeAll(); see file_copy.h.
#include "archive/file_copy.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "archive/mapped_file_guard.h"
#include "exmode/error.h"

namespace exmode::archive::io {
namespace {

// read(2), write(2) and copy_file_range(2) move at most about 2 GiB per call on Linux;
// ask for no more.
constexpr std::size_t kMaxTransfer = std::size_t{1} << 30;

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what, int error) {
  throw Error(ErrorKind::kIo, path.string() + ": " + what + ": " + std::strerror(error));
}

// A write from a map whose file has shrunk fails with EFAULT (the kernel does not raise
// SIGBUS inside a system call): name the input rather than the output.
[[noreturn]] void failWrite(const std::filesystem::path& path, int error,
                            std::span<const iovec> data) {
  if (error == EFAULT) {
    for (const iovec& piece : data) {
      if (const char* input = guard::mappedFileAt(piece.iov_base)) {
        throw Error(ErrorKind::kIo, std::string(input) +
                                        ": changed or truncated while being read (a write "
                                        "from its map failed: " +
                                        std::strerror(error) + ")");
      }
    }
  }
  fail(path, "write failed", error);
}

bool kernelCannotCopy(int error) {
  return error == EXDEV || error == ENOSYS || error == EINVAL || error == EOPNOTSUPP;  // == ENOTSUP
}

// Copies up to `size` bytes of `in_fd` from `in_offset` to `out_fd` at its file offset with
// copy_file_range(2) and returns how many it copied: all of them, or fewer when the kernel
// cannot copy between the two files or copies nothing (the input ended, or a file system
// that reports no size, as some pseudo and network file systems do). The caller copies the
// rest another way, which also tells an input that ended early.
std::uint64_t copyByKernel(int in_fd, std::uint64_t in_offset, int out_fd, std::uint64_t size,
                           const std::filesystem::path& in_path,
                           const std::filesystem::path& out_path) {
  std::uint64_t done = 0;
  while (done < size) {
    auto offset = static_cast<off_t>(in_offset + done);
    const ssize_t copied = ::copy_file_range(
        in_fd, &offset, out_fd, nullptr,
        static_cast<std::size_t>(std::min<std::uint64_t>(size - done, kMaxTransfer)), 0);
    if (copied < 0) {
      if (errno == EINTR) continue;
      if (kernelCannotCopy(errno)) break;
      // Which side failed is not known; the output is the usual suspect (disk full).
      fail(out_path, "copy from " + in_path.string() + " failed", errno);
    }
    if (copied == 0) break;
    done += static_cast<std::uint64_t>(copied);
  }
  return done;
}

// The copy through a buffer: at most one block of the input is in memory at a time.
void copyByReading(int in_fd, std::uint64_t in_offset, int out_fd, std::uint64_t size,
                   const std::filesystem::path& in_path, const std::filesystem::path& out_path) {
  const auto block = static_cast<std::size_t>(std::min<std::uint64_t>(size, kCopyBlockSize));
  const std::unique_ptr<char[]> buffer(new char[block]);
  while (size > 0) {
    const auto count = static_cast<std::size_t>(std::min<std::uint64_t>(size, block));
    readAll(in_fd, in_offset, buffer.get(), count, in_path);
    writeAll(out_fd, buffer.get(), count, out_path);
    in_offset += count;
    size -= count;
  }
}

// Writes every byte the iovecs describe, resuming after short writes.
void writeBatch(int fd, std::vector<iovec>& iov, const std::filesystem::path& path) {
  iovec* at = iov.data();
  std::size_t left = iov.size();
  while (left > 0) {
    const ssize_t written = ::writev(fd, at, static_cast<int>(left));
    if (written < 0) {
      if (errno == EINTR) continue;
      failWrite(path, errno, std::span<const iovec>(at, left));
    }
    // A short write: skip what went out, resume inside the chunk it stopped in.
    auto done = static_cast<std::size_t>(written);
    while (left > 0 && done >= at->iov_len) {
      done -= at->iov_len;
      ++at;
      --left;
    }
    if (left > 0) {
      at->iov_base = static_cast<char*>(at->iov_base) + done;
      at->iov_len -= done;
    }
  }
}

// Whether `chunk` lies inside `source`'s map.
bool inMap(const MappedFile& source, std::string_view chunk) {
  const auto begin = reinterpret_cast<std::uintptr_t>(source.bytes.data());
  const auto at = reinterpret_cast<std::uintptr_t>(chunk.data());
  return at >= begin && at - begin <= source.bytes.size() &&
         chunk.size() <= source.bytes.size() - (at - begin);
}

// Appends `chunk`, which lies in `source`'s map, to `fd`: copied from `source`'s file by
// the kernel while it can (`kernel` is cleared for good when it cannot copy between the two
// files, as copyRange() falls back), the rest written from the map.
void copyMapped(int fd, const MappedFile& source, std::string_view chunk, bool& kernel,
                const std::filesystem::path& path) {
  const auto offset = static_cast<std::uint64_t>(chunk.data() - source.bytes.data());
  const std::uint64_t copied =
      copyByKernel(source.fd, offset, fd, chunk.size(), *source.path, path);
  if (copied < chunk.size()) kernel = false;
  chunk.remove_prefix(static_cast<std::size_t>(copied));
  writeAll(fd, chunk.data(), chunk.size(), path);
}

}  // namespace

void writeAll(int fd, const char* data, std::size_t size, const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t written = ::write(fd, data, std::min(size, kMaxTransfer));
    if (written < 0) {
      if (errno == EINTR) continue;
      const iovec piece{const_cast<char*>(data), size};
      failWrite(path, errno, std::span<const iovec>(&piece, 1));
    }
    data += written;
    size -= static_cast<std::size_t>(written);
  }
}

void writeChunks(int fd, std::span<const std::string_view> chunks,
                 const std::filesystem::path& path,
                 const std::function<void(std::span<const std::string_view>)>& visit,
                 const MappedFile* source) {
  // Unchanged stretches of a program lie in the mapped input: the kernel copies them from
  // page cache to page cache. Written from the map instead, 2 GB took 5.4-15.2 s on the
  // reference machine, against 2.8-3.5 s for copy_file_range in 5 kB pieces with a small
  // write between each two (interleaved runs).
  bool kernel = source != nullptr && source->method == CopyMethod::kKernel;
  auto copied = [&](std::string_view chunk) {
    return kernel && chunk.size() >= kMinKernelCopy && inMap(*source, chunk);
  };
  // Batches of at most IOV_MAX chunks and about 4 MiB: large enough that the system calls
  // cost little, small enough to still be in the cache when the kernel copies them.
  constexpr std::size_t kBatchBytes = std::size_t{4} << 20;
  std::vector<iovec> iov;
  iov.reserve(IOV_MAX);
  std::size_t next = 0;
  while (next < chunks.size()) {
    if (copied(chunks[next])) {
      visit(chunks.subspan(next, 1));
      copyMapped(fd, *source, chunks[next], kernel, path);
      ++next;
      continue;
    }
    const std::size_t first = next;
    std::size_t bytes = 0;
    iov.clear();
    while (next < chunks.size() && iov.size() < IOV_MAX && bytes < kBatchBytes &&
           !copied(chunks[next])) {
      const std::string_view chunk = chunks[next++];
      if (chunk.empty()) continue;
      // A chunk beyond one call's limit is written on its own, in pieces.
      if (chunk.size() > kMaxTransfer) {
        if (!iov.empty()) {
          --next;
          break;
        }
        visit(chunks.subspan(first, next - first));
        writeAll(fd, chunk.data(), chunk.size(), path);
        break;
      }
      iov.push_back({const_cast<char*>(chunk.data()), chunk.size()});
      bytes += chunk.size();
    }
    if (iov.empty()) continue;
    visit(chunks.subspan(first, next - first));
    writeBatch(fd, iov, path);
  }
}

void readAll(int fd, std::uint64_t offset, char* out, std::size_t size,
             const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t got = ::pread(fd, out, std::min(size, kMaxTransfer), static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      fail(path, "read failed", errno);
    }
    if (got == 0) {
      throw Error(ErrorKind::kIo, path.string() +
                                      ": changed or truncated while being read: it ended early "
                                      "at offset " +
                                      std::to_string(offset));
    }
    out += got;
    offset += static_cast<std::uint64_t>(got);
    size -= static_cast<std::size_t>(got);
  }
}

void copyRange(int in_fd, std::uint64_t in_offset, int out_fd, std::uint64_t size,
               const std::filesystem::path& in_path, const std::filesystem::path& out_path,
               CopyMethod method) {
  if (method == CopyMethod::kKernel) {
    const std::uint64_t copied = copyByKernel(in_fd, in_offset, out_fd, size, in_path, out_path);
    in_offset += copied;
    size -= copied;
  }
  if (size > 0) copyByReading(in_fd, in_offset, out_fd, size, in_path, out_path);
}

}  // namespace exmode::archive::io
