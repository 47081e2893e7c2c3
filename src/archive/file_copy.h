// Copying a range of one file into another without mapping it: copy_file_range(2), which
// lets the kernel copy (or, on file systems with reflinks, share) the blocks, falling back
// to reading and writing through a small buffer where the kernel cannot copy between the
// two files. Either way the bytes never pass through a memory map of the input, so copying
// a gigabyte of weights does not make them part of the process's memory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string_view>

namespace exmode::archive::io {

enum class CopyMethod {
  kKernel,     // copy_file_range, with the fallback below when the kernel refuses
  kReadWrite,  // pread/write in kCopyBlockSize blocks only (the fallback; tests force it)
};

inline constexpr std::size_t kCopyBlockSize = std::size_t{1} << 20;

// Copies `size` bytes of `in_fd` starting at `in_offset` to `out_fd` at its file offset,
// which advances by `size`; `in_fd`'s file offset is not used. Falls back from the kernel
// copy on EXDEV, ENOSYS, EINVAL, EOPNOTSUPP (e.g. `out_fd` is a pipe, an old kernel, a file
// system without support) and when the kernel copies nothing before the end. Throws
// exmode::Error(kIo) naming `in_path` when the input ends early or cannot be read, and
// `out_path` when the output cannot be written.
void copyRange(int in_fd, std::uint64_t in_offset, int out_fd, std::uint64_t size,
               const std::filesystem::path& in_path, const std::filesystem::path& out_path,
               CopyMethod method = CopyMethod::kKernel);

// Writes all of `size` bytes, retrying on EINTR and short writes. Throws Error(kIo).
void writeAll(int fd, const char* data, std::size_t size, const std::filesystem::path& path);

// A file mapped whole (an archive being rewritten): chunks of its map can be copied from
// `fd` by the kernel rather than written from memory.
struct MappedFile {
  int fd = -1;
  std::string_view bytes;  // the map
  const std::filesystem::path* path = nullptr;
  CopyMethod method = CopyMethod::kKernel;  // kReadWrite: write every chunk from memory
};

// Chunks of a MappedFile at least this long are copied by the kernel.
inline constexpr std::size_t kMinKernelCopy = 4096;

// Writes the chunks one after the other with writev(2), straight from where they lie (a
// serialized program is a million views into its source; gathering them into a buffer
// first would copy every byte once more). Chunks of at least kMinKernelCopy bytes that lie
// in `source`'s map (a program's unchanged stretches) are copied from its file by the
// kernel instead, as copyRange() does, and written from the map if the kernel cannot copy
// between the two files. `visit` sees each batch of chunks just before it is written, while
// it is in the cache (the caller's CRC). Throws Error(kIo).
void writeChunks(int fd, std::span<const std::string_view> chunks,
                 const std::filesystem::path& path,
                 const std::function<void(std::span<const std::string_view>)>& visit,
                 const MappedFile* source = nullptr);

// Reads exactly `size` bytes at `offset` into `out`. Throws Error(kIo) on failure and when
// the file ends first.
void readAll(int fd, std::uint64_t offset, char* out, std::size_t size,
             const std::filesystem::path& path);

}  // namespace exmode::archive::io
