// ArchiveWriter: writes a zip archive of stored records laid out the way torch's writer lays
// them out (data aligned to 64 bytes by an 'FB' padding extra field, zip64 where needed),
// so that torch, Python's zipfile and unzip all read the result.
//
// Unlike torch's writer (miniz), local headers carry the CRC-32 and sizes and there are no
// data descriptors: we know both before writing a record, and streaming readers reject
// stored records whose sizes only follow the data. Records copied from another archive
// move file to file through the kernel (file_copy.h); a leading run of them can be kept
// exactly as it was, descriptors included (copyLeadingRecords).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "archive/file_copy.h"
#include "archive/zip_format.h"
#include "exmode/archive.h"
#include "exmode/error.h"

namespace exmode::archive {
namespace {

constexpr std::size_t kBufferSize = std::size_t{1} << 20;
// Copied records smaller than this are read into the buffer: one pread instead of a flush
// and a copy_file_range each, which matters for archives of many small records.
constexpr std::size_t kSmallCopySize = std::size_t{64} << 10;

struct WrittenRecord {
  std::string name;
  std::uint32_t crc32;
  std::uint64_t size;
  std::uint64_t local_offset;
};

bool sizeNeedsZip64(std::uint64_t size) { return size >= zip::kMax32; }

std::uint32_t clamp32(std::uint64_t value) {
  return value >= zip::kMax32 ? zip::kMax32 : static_cast<std::uint32_t>(value);
}

std::uint16_t clamp16(std::uint64_t value) {
  return value >= zip::kMax16 ? zip::kMax16 : static_cast<std::uint16_t>(value);
}

// The zip64 extra field for a header: sizes when the record is large, the local header
// offset when it lies beyond 4 GiB. Empty when neither. torch puts the same field, offset
// included, in local headers too; we follow it so the data lands where torch would put it.
std::string zip64Extra(std::uint64_t size, std::uint64_t local_offset) {
  std::string payload;
  if (sizeNeedsZip64(size)) {
    zip::appendLE<std::uint64_t>(payload, size);  // uncompressed
    zip::appendLE<std::uint64_t>(payload, size);  // compressed: records are stored
  }
  if (local_offset >= zip::kMax32) zip::appendLE<std::uint64_t>(payload, local_offset);
  if (payload.empty()) return payload;
  std::string extra;
  zip::appendLE<std::uint16_t>(extra, zip::kZip64ExtraId);
  zip::appendLE<std::uint16_t>(extra, static_cast<std::uint16_t>(payload.size()));
  return extra + payload;
}

// torch's padding field (caffe2 getPadding): the record's data must start at a multiple
// of kDataAlignment counting the local header, the name, the zip64 field and this field's
// own 4-byte header.
std::string paddingExtra(std::uint64_t data_start_without_padding) {
  const std::uint64_t mod = data_start_without_padding % kDataAlignment;
  const std::size_t padding = mod == 0 ? 0 : static_cast<std::size_t>(kDataAlignment - mod);
  std::string extra;
  zip::appendLE<std::uint16_t>(extra, zip::kPaddingExtraId);
  zip::appendLE<std::uint16_t>(extra, static_cast<std::uint16_t>(padding));
  extra.append(padding, zip::kPaddingByte);
  return extra;
}

}  // namespace

struct ArchiveWriter::Impl {
  std::filesystem::path path;
  int fd = -1;
  std::string buffer;
  std::uint64_t cursor = 0;  // bytes written so far, buffered or not
  // Central directory entries of the records copyLeadingRecords copied, as stored.
  std::vector<std::string_view> leading_entries;
  std::vector<WrittenRecord> records;
  bool finished = false;

  [[noreturn]] void fail(const std::string& what, int error) const {
    throw Error(ErrorKind::kIo, path.string() + ": " + what + ": " + std::strerror(error));
  }

  void checkOpen(const char* operation) const {
    if (finished) {
      throw std::logic_error(std::string("ArchiveWriter::") + operation + " after finish");
    }
  }

  void flush() {
    io::writeAll(fd, buffer.data(), buffer.size(), path);
    buffer.clear();
  }

  // Sets the CRC-32 field of a local header already written (and flushed).
  void patchCrc(const WrittenRecord& record) const {
    std::string crc;
    zip::appendLE<std::uint32_t>(crc, record.crc32);
    const auto at = static_cast<off_t>(record.local_offset + zip::kLocalHeaderCrcOffset);
    for (;;) {
      const ssize_t written = ::pwrite(fd, crc.data(), crc.size(), at);
      if (written == static_cast<ssize_t>(crc.size())) return;
      if (written < 0 && errno == EINTR) continue;
      fail("write failed", written < 0 ? errno : EIO);
    }
  }

  // Large payloads go straight from the caller's memory to the file instead of through
  // the buffer.
  void emit(std::string_view bytes) {
    if (buffer.size() + bytes.size() > kBufferSize) flush();
    if (bytes.size() >= kBufferSize) {
      io::writeAll(fd, bytes.data(), bytes.size(), path);
    } else {
      buffer.append(bytes);
    }
    cursor += bytes.size();
  }

  // Appends `size` bytes of `in_fd` at `offset`: small ones read into the buffer, large
  // ones copied by the kernel after flushing, so the file offset is the cursor.
  void emitCopy(int in_fd, std::uint64_t offset, std::uint64_t size,
                const std::filesystem::path& in_path) {
    if (size < kSmallCopySize) {
      const auto count = static_cast<std::size_t>(size);
      if (buffer.size() + count > kBufferSize) flush();
      const std::size_t at = buffer.size();
      buffer.resize(at + count);
      try {
        io::readAll(in_fd, offset, buffer.data() + at, count, in_path);
      } catch (...) {
        buffer.resize(at);
        throw;
      }
    } else {
      flush();
      io::copyRange(in_fd, offset, fd, size, in_path, path);
    }
    cursor += size;
  }

  void checkName(std::string_view name) const {
    if (name.empty() || name.size() > zip::kMax16) {
      throw Error(ErrorKind::kIo, path.string() + ": cannot write a record with a name of " +
                                      std::to_string(name.size()) + " bytes (1 to 65535 allowed)");
    }
  }

  std::string localHeader(const WrittenRecord& record) const {
    const std::string zip64 = zip64Extra(record.size, record.local_offset);
    const std::string padding =
        paddingExtra(record.local_offset + zip::kLocalHeaderSize + record.name.size() +
                     zip64.size() + zip::kExtraHeaderSize);
    std::string header;
    zip::appendLE<std::uint32_t>(header, zip::kLocalHeaderSignature);
    zip::appendLE<std::uint16_t>(header,
                                 zip64.empty() ? zip::kVersionNeeded : zip::kVersionNeededZip64);
    appendCommonFields(header, record);
    zip::appendLE<std::uint16_t>(header, static_cast<std::uint16_t>(zip64.size() + padding.size()));
    header += record.name;
    header += zip64;
    header += padding;
    return header;
  }

  // The fields local and central headers share, from flags to the name length.
  static void appendCommonFields(std::string& header, const WrittenRecord& record) {
    zip::appendLE<std::uint16_t>(header, 0);  // flags
    zip::appendLE<std::uint16_t>(header, zip::kMethodStored);
    zip::appendLE<std::uint16_t>(header, zip::kDosTime);
    zip::appendLE<std::uint16_t>(header, zip::kDosDate);
    zip::appendLE<std::uint32_t>(header, record.crc32);
    zip::appendLE<std::uint32_t>(header, clamp32(record.size));  // compressed
    zip::appendLE<std::uint32_t>(header, clamp32(record.size));  // uncompressed
    zip::appendLE<std::uint16_t>(header, static_cast<std::uint16_t>(record.name.size()));
  }

  static std::string centralHeader(const WrittenRecord& record) {
    const std::string zip64 = zip64Extra(record.size, record.local_offset);
    const std::uint16_t version = zip64.empty() ? zip::kVersionNeeded : zip::kVersionNeededZip64;
    std::string header;
    zip::appendLE<std::uint32_t>(header, zip::kCentralHeaderSignature);
    zip::appendLE<std::uint16_t>(header, version);  // made by: MS-DOS attributes, like torch
    zip::appendLE<std::uint16_t>(header, version);  // needed
    appendCommonFields(header, record);
    zip::appendLE<std::uint16_t>(header, static_cast<std::uint16_t>(zip64.size()));
    zip::appendLE<std::uint16_t>(header, 0);  // comment size
    zip::appendLE<std::uint16_t>(header, 0);  // disk
    zip::appendLE<std::uint16_t>(header, 0);  // internal attributes
    zip::appendLE<std::uint32_t>(header, 0);  // external attributes
    zip::appendLE<std::uint32_t>(header, clamp32(record.local_offset));
    header += record.name;
    header += zip64;
    return header;
  }

  // The end records; the zip64 pair only when a count, size or offset does not fit.
  std::string endOfCentralDir(std::uint64_t directory_offset, std::uint64_t directory_size) const {
    const std::uint64_t entries = leading_entries.size() + records.size();
    std::string end;
    if (entries >= zip::kMax16 || directory_offset >= zip::kMax32 ||
        directory_size >= zip::kMax32) {
      const std::uint64_t record_offset = directory_offset + directory_size;
      zip::appendLE<std::uint32_t>(end, zip::kZip64EndOfCentralDirSignature);
      zip::appendLE<std::uint64_t>(end, zip::kZip64EndOfCentralDirRecordSize);
      zip::appendLE<std::uint16_t>(end, zip::kVersionNeededZip64);  // made by
      zip::appendLE<std::uint16_t>(end, zip::kVersionNeededZip64);  // needed
      zip::appendLE<std::uint32_t>(end, 0);                         // this disk
      zip::appendLE<std::uint32_t>(end, 0);                         // directory's disk
      zip::appendLE<std::uint64_t>(end, entries);                   // on this disk
      zip::appendLE<std::uint64_t>(end, entries);                   // in total
      zip::appendLE<std::uint64_t>(end, directory_size);
      zip::appendLE<std::uint64_t>(end, directory_offset);
      zip::appendLE<std::uint32_t>(end, zip::kZip64LocatorSignature);
      zip::appendLE<std::uint32_t>(end, 0);  // disk of the zip64 record
      zip::appendLE<std::uint64_t>(end, record_offset);
      zip::appendLE<std::uint32_t>(end, 1);  // total disks
    }
    zip::appendLE<std::uint32_t>(end, zip::kEndOfCentralDirSignature);
    zip::appendLE<std::uint16_t>(end, 0);  // this disk
    zip::appendLE<std::uint16_t>(end, 0);  // directory's disk
    zip::appendLE<std::uint16_t>(end, clamp16(entries));
    zip::appendLE<std::uint16_t>(end, clamp16(entries));
    zip::appendLE<std::uint32_t>(end, clamp32(directory_size));
    zip::appendLE<std::uint32_t>(end, clamp32(directory_offset));
    zip::appendLE<std::uint16_t>(end, 0);  // comment size
    return end;
  }
};

ArchiveWriter::ArchiveWriter(const std::filesystem::path& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (impl_->fd < 0) impl_->fail("cannot create", errno);
  impl_->buffer.reserve(kBufferSize);
}

ArchiveWriter::ArchiveWriter(const std::filesystem::path& path, int fd)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->fd = fd;
  impl_->buffer.reserve(kBufferSize);
}

ArchiveWriter::~ArchiveWriter() {
  if (impl_->fd >= 0) ::close(impl_->fd);
}

std::uint32_t ArchiveWriter::add(std::string_view name, std::string_view data,
                                 std::optional<std::uint32_t> crc32) {
  return add(name, std::span<const std::string_view>(&data, 1), crc32);
}

std::uint32_t ArchiveWriter::add(std::string_view name, std::span<const std::string_view> chunks,
                                 std::optional<std::uint32_t> crc32, const ArchiveReader* source) {
  impl_->checkOpen("add");
  impl_->checkName(name);
  std::uint64_t size = 0;
  for (std::string_view chunk : chunks) size += chunk.size();
  WrittenRecord record{std::string(name), crc32.value_or(0), size, impl_->cursor};
  if (crc32 || size < kBufferSize) {
    if (!crc32) record.crc32 = zip::crc32Update(0, chunks);
    impl_->emit(impl_->localHeader(record));
    for (std::string_view chunk : chunks) impl_->emit(chunk);
  } else {
    // A large record of many pieces (a serialized program): written from where the pieces
    // lie, its CRC computed batch by batch as they go out, then set in the header.
    impl_->emit(impl_->localHeader(record));
    impl_->flush();
    io::MappedFile mapped;
    if (source != nullptr) mapped = {source->fd(), source->mapped(), &source->path()};
    io::writeChunks(
        impl_->fd, chunks, impl_->path,
        [&](std::span<const std::string_view> batch) {
          record.crc32 = zip::crc32Update(record.crc32, batch);
        },
        source != nullptr ? &mapped : nullptr);
    impl_->cursor += size;
    impl_->patchCrc(record);
  }
  const std::uint32_t written_crc = record.crc32;
  impl_->records.push_back(std::move(record));
  return written_crc;
}

void ArchiveWriter::copy(const ArchiveReader& reader, const Record& record) {
  impl_->checkOpen("copy");
  impl_->checkName(record.name);
  WrittenRecord written{record.name, record.crc32, record.size, impl_->cursor};
  impl_->emit(impl_->localHeader(written));
  impl_->emitCopy(reader.fd(), record.data_offset, record.size, reader.path());
  impl_->records.push_back(std::move(written));
}

bool ArchiveWriter::copyLeadingRecords(const ArchiveReader& reader, std::size_t count) {
  impl_->checkOpen("copyLeadingRecords");
  const std::vector<Record>& input = reader.records();
  if (impl_->cursor != 0 || count >= input.size()) return false;
  // Local headers in directory order, each record's data ending before the next header.
  // The reader has checked that every header and its data lie within the file.
  for (std::size_t i = 0; i + 1 < input.size(); ++i) {
    if (input[i].data_offset + input[i].size > input[i + 1].local_header_offset) return false;
  }
  const std::uint64_t end = input[count].local_header_offset;
  impl_->emitCopy(reader.fd(), 0, end, reader.path());
  for (std::size_t i = 0; i < count; ++i) impl_->leading_entries.push_back(input[i].central_entry);
  return true;
}

void ArchiveWriter::finish(const WriteOptions& options) {
  if (impl_->finished) throw std::logic_error("ArchiveWriter::finish called twice");
  impl_->finished = true;
  const std::uint64_t directory_offset = impl_->cursor;
  for (std::string_view entry : impl_->leading_entries) impl_->emit(entry);
  for (const WrittenRecord& record : impl_->records) impl_->emit(Impl::centralHeader(record));
  const std::uint64_t directory_size = impl_->cursor - directory_offset;
  impl_->emit(impl_->endOfCentralDir(directory_offset, directory_size));
  impl_->flush();
  if (options.sync && ::fsync(impl_->fd) != 0) impl_->fail("fsync failed", errno);
  const int fd = impl_->fd;
  impl_->fd = -1;
  if (::close(fd) != 0) impl_->fail("close failed", errno);
}

}  // namespace exmode::archive
