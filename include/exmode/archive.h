// The PT2 archive container: the zip file torch.export.save writes.
//
// Reading maps the file and never copies record data: a record is a view into the map.
// Writing copies records byte for byte (stored, no compression) from file to file through
// the kernel, aligns each record's data to 64 bytes as torch's writer does, uses zip64
// where sizes or offsets need it, and keeps `.data/serialization_id` consistent with the
// records written. A rewrite keeps everything before the first changed record as it is.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace exmode::archive {

// Names of records inside the archive root folder (torch/csrc/export/pt2_archive_constants.h).
inline constexpr std::string_view kArchiveFormatPath = "archive_format";
inline constexpr std::string_view kArchiveVersionPath = "archive_version";
inline constexpr std::string_view kDataVersionPath = ".data/version";
inline constexpr std::string_view kSerializationIdPath = ".data/serialization_id";
inline constexpr std::string_view kModelsDir = "models/";
inline constexpr std::string_view kModelsExtension = ".json";
inline constexpr std::size_t kDataAlignment = 64;

struct Record {
  std::string name;                   // full name, including the root folder
  std::uint64_t local_header_offset;  // offset of the record's local header in the file
  std::uint64_t data_offset;          // offset of the record's bytes in the file
  std::uint64_t size;                 // stored size (== uncompressed size: records are stored)
  std::uint32_t crc32;                // as declared in the central directory
  // The record's central directory entry as stored (fixed fields, name, extra fields,
  // comment): a view into the reader's map, valid while the reader lives.
  std::string_view central_entry;
};

// A read-only, memory-mapped PT2 archive. Construction validates the zip structure
// (end of central directory, zip64 records, local headers, bounds of every record, no two
// records overlapping), that every record is stored uncompressed, that all records share
// one root folder and that `.data/version` is present. Throws exmode::Error(kBadArchive)
// naming the file, or kIo when the file cannot be opened or mapped. Empty directory entries
// (names ending in '/', which torch never writes) are skipped. CRC-32s are not checked:
// that would read every weight. A FIFO, device or directory is refused (kIo) without
// blocking. The file must not be truncated by others while the reader lives: if it is, the
// next read of a page past its new end ends the process with status 6 and a one-line
// message naming the file, after removing rewriteArchive's temporary files
// (src/archive/mapped_file_guard.h), instead of an unexplained SIGBUS.
//
// The file stays open (fd()) as long as the reader, so that record bytes can be copied
// between files by the kernel (copy_file_range) instead of through the map: a weight
// copied that way never becomes part of the process's memory.
class ArchiveReader {
 public:
  explicit ArchiveReader(const std::filesystem::path& path);
  ~ArchiveReader();
  ArchiveReader(const ArchiveReader&) = delete;
  ArchiveReader& operator=(const ArchiveReader&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // The archive's file, open read-only for the reader's lifetime (close-on-exec).
  int fd() const { return fd_; }
  // The top-level folder every record sits under, without the trailing '/'.
  const std::string& root() const { return root_; }
  // Records in the order they appear in the central directory.
  const std::vector<Record>& records() const { return records_; }
  // Finds a record by its name relative to the root folder; null when absent.
  const Record* find(std::string_view relative_name) const;
  // The record's bytes; valid while the reader lives.
  std::string_view data(const Record& record) const;
  // The whole file as mapped; valid while the reader lives.
  std::string_view mapped() const { return {map_, map_size_}; }
  // The record's bytes after checking them against the record's CRC-32; throws
  // Error(kBadArchive) on a mismatch. For records exmode reads (programs), not for weights,
  // which are copied with their CRC and so stay checkable downstream.
  // Prefetches the record's pages first.
  std::string_view checkedData(const Record& record) const;
  // Checks the record's bytes against its CRC-32 (the check checkedData() makes); throws
  // Error(kBadArchive) on a mismatch. Safe to call from another thread.
  void checkCrc(const Record& record) const;
  // Asks the kernel to read the record's pages into the map now, in one go, rather than
  // one fault at a time as they are touched (MADV_POPULATE_READ, or MADV_WILLNEED before
  // Linux 5.14). Advice only: never fails. For records about to be read whole, such as
  // programs; the pages then count towards the process's memory like any read part of the map.
  void prefetch(const Record& record) const;
  // Names (relative to the root) of the program records, `models/<name>.json`.
  std::vector<std::string> programNames() const;

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  const char* map_ = nullptr;
  std::size_t map_size_ = 0;
  std::string root_;
  std::vector<Record> records_;
};

// Whether writing makes the archive durable before returning.
struct WriteOptions {
  // fsync the file (and, in rewriteArchive, its directory after the rename) before
  // returning. Without it the bytes reach the disk when the kernel writes them back, as
  // with cp, torch.save and torch.export.save; a crash of the machine (not of the
  // process) shortly after may then lose them.
  bool sync = true;
};

// Writes an archive to `path` (usually a temporary file the caller renames). Records are
// written in the order given, stored, each one's data aligned to kDataAlignment. The
// writer writes the bytes it is given: keeping `.data/serialization_id` consistent is the
// caller's job (rewriteArchive does it with serializationId()).
class ArchiveWriter {
 public:
  // Creates or truncates `path`.
  explicit ArchiveWriter(const std::filesystem::path& path);
  // Takes ownership of `fd`, an empty file open for writing; `path` names it in messages.
  ArchiveWriter(const std::filesystem::path& path, int fd);
  ~ArchiveWriter();
  ArchiveWriter(const ArchiveWriter&) = delete;
  ArchiveWriter& operator=(const ArchiveWriter&) = delete;

  // Adds a record with the given full name and returns its CRC-32. `crc32` may be passed
  // when known (copied records) to avoid recomputing it.
  std::uint32_t add(std::string_view name, std::string_view data,
                    std::optional<std::uint32_t> crc32 = std::nullopt);
  // Adds a record whose bytes are the concatenation of `chunks`, without joining them,
  // and returns its CRC-32, computed over the chunks as they are written unless given.
  // Long chunks that lie in `source`'s map (the unchanged stretches of a program read
  // from it) are copied from its file by the kernel rather than written from the map.
  std::uint32_t add(std::string_view name, std::span<const std::string_view> chunks,
                    std::optional<std::uint32_t> crc32 = std::nullopt,
                    const ArchiveReader* source = nullptr);
  // Adds `record` of `reader` under its name and with its CRC-32 (not re-checked). The
  // bytes go from the reader's file to this one through the kernel (copy_file_range, or
  // pread/write in 1 MiB blocks where that is unsupported), never through the reader's
  // map, so copying a large record costs no memory.
  void copy(const ArchiveReader& reader, const Record& record);
  // Starts the archive with the first `count` records of `reader` (in central directory
  // order) exactly as they are: the input's bytes from its start up to the local header of
  // record `count` (headers, data descriptors, padding and all), copied in one go as by
  // copy(), and their central directory entries as stored; their offsets stay valid
  // because nothing before them moves. Records added afterwards follow. Returns false,
  // writing nothing, unless this is the first call, `count` < reader.records().size(), and
  // in the input the records' local headers appear in central directory order with no
  // record's data running into the next record's header. `reader` must outlive finish().
  [[nodiscard]] bool copyLeadingRecords(const ArchiveReader& reader, std::size_t count);
  // Writes the central directory, flushes, syncs (if options.sync) and closes the file.
  // Throws kIo on failure. Without finish(), the destructor closes the file, leaving it
  // incomplete.
  void finish(const WriteOptions& options = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Computes torch's serialization id for records named `relative_names` (names relative to
// the root, in write order, excluding the id record itself) with the given CRC-32s.
std::string serializationId(const std::vector<std::string>& relative_names,
                            const std::vector<std::uint32_t>& crc32s);

// New bytes for a record: the concatenation of `chunks`, which are not copied. Whatever
// they view must stay alive until rewriteArchive returns.
struct Replacement {
  Replacement(std::string name, std::vector<std::string_view> data_chunks);
  // One chunk: `{"models/model.json", json}` with `json` a std::string kept alive by the caller.
  Replacement(std::string name, std::string_view data);
  // Refused: a temporary string would be destroyed before rewriteArchive reads it.
  template <typename S,
            typename = std::enable_if_t<std::is_same_v<std::remove_cv_t<S>, std::string>>>
  Replacement(std::string name, S&& data) = delete;

  std::string relative_name;  // relative to the archive's root folder
  std::vector<std::string_view> chunks;
};

// Copies `reader`'s archive to `out_path`, replacing the bytes of the records named in
// `replacements` (relative names) and keeping every other record byte for byte. The
// serialization id is recomputed if it was consistent in the input.
//
// Everything before the first record (in central directory order) whose bytes change is
// copied as it is: torch writes weights first and programs last, so the weights' bytes,
// headers and data descriptors come out identical, and are copied by the kernel
// (copy_file_range), never read into memory. The records from the first changed one on
// are rewritten, aligned as torch aligns them. Archives whose local headers are not in
// central directory order are rewritten whole, still copied by the kernel.
//
// The output is written to a temporary file beside `out_path` and renamed over it, so
// `out_path` is either untouched or complete, even if the process dies; with
// options.sync the file and then the directory are also fsynced, so the new archive
// survives a crash of the machine too. The output gets the input file's permission bits,
// and when `out_path` is a symbolic link the file it points to is replaced. Throws
// exmode::Error(kIo) on failure, kBadArchive when a replacement names no record or names
// one twice.
void rewriteArchive(const ArchiveReader& reader, const std::vector<Replacement>& replacements,
                    const std::filesystem::path& out_path, const WriteOptions& options = {});

}  // namespace exmode::archive
