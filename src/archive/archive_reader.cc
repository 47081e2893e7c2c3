// ArchiveReader: maps a PT2 archive read-only and validates its zip structure, so that
// the rest of exmode can take record bytes straight from the map without further checks.
//
// Every offset and size read from the file is checked against the file size (or the start
// of the central directory) before use, with arithmetic that cannot overflow; records may
// not overlap; and nothing is allocated from a count the file size does not bound. Record data is
// not CRC-checked here: that would read every weight, and torch's own reader does not either.
//
// Directory entries (names ending in '/') are accepted when empty and skipped: torch does
// not write them, but zip tools that repack an archive do, and they carry nothing.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_set>
#include <utility>

#include "archive/mapped_file_guard.h"
#include "archive/zip_format.h"
#include "exmode/archive.h"
#include "exmode/error.h"

// Linux 5.14; older C libraries do not name it.
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

namespace exmode::archive {
namespace {

using zip::FieldReader;

// Where the central directory is, as the end records declare it.
struct Directory {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  std::uint64_t entries = 0;
  std::uint64_t limit = 0;  // the central directory must end at or before this offset
};

// One central directory entry, with zip64 values resolved.
struct CentralEntry {
  std::string_view raw;  // the entry as stored, name, extra fields and comment included
  std::string name;
  std::uint16_t flags = 0;
  std::uint16_t method = 0;
  std::uint32_t crc32 = 0;
  std::uint64_t compressed_size = 0;
  std::uint64_t size = 0;
  std::uint64_t local_offset = 0;
  std::uint32_t disk = 0;
};

// Makes a record name safe to print on one line.
std::string printable(std::string_view name) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (char c : name) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xF];
    } else {
      out += c;
    }
  }
  return out;
}

// Why a record name is unacceptable, or empty when it is fine.
std::string nameProblem(std::string_view name) {
  if (name.empty()) return "a record has an empty name";
  const std::string shown = "record " + printable(name);
  if (name.find('\0') != std::string_view::npos) return shown + " has a NUL byte in its name";
  if (name.front() == '/') return shown + " has an absolute path";
  const bool directory = name.back() == '/';
  const std::string_view body = directory ? name.substr(0, name.size() - 1) : name;
  std::size_t start = 0;
  while (start <= body.size()) {
    const std::size_t end = std::min(body.find('/', start), body.size());
    const std::string_view component = body.substr(start, end - start);
    if (component == "..") return shown + " has a '..' path component";
    if (component == ".") return shown + " has a '.' path component";
    if (component.empty()) return shown + " has an empty path component";
    start = end + 1;
  }
  return {};
}

class Parser {
 public:
  Parser(const std::filesystem::path& path, std::string_view file) : path_(path), file_(file) {}

  std::vector<Record> parse(std::string& root) {
    const Directory directory = readDirectory();
    std::vector<Record> records;
    records.reserve(static_cast<std::size_t>(directory.entries));
    std::unordered_set<std::string> names;
    const std::string_view central = file_.substr(directory.offset, directory.size);
    FieldReader reader(central);
    for (std::uint64_t i = 0; i < directory.entries; ++i) {
      const std::size_t start = reader.position();
      CentralEntry entry = readCentralEntry(reader, i);
      entry.raw = central.substr(start, reader.position() - start);
      checkEntry(entry);
      checkRoot(entry.name, root);
      if (entry.name.back() == '/') {
        if (entry.size != 0) bad("directory entry " + printable(entry.name) + " has data");
        continue;
      }
      if (!names.insert(entry.name).second) {
        bad("record " + printable(entry.name) + " appears more than once");
      }
      const std::uint64_t data_offset = locateData(entry, directory.offset);
      records.push_back(Record{std::move(entry.name), entry.local_offset, data_offset, entry.size,
                               entry.crc32, entry.raw});
    }
    if (records.empty()) bad("the archive has no records");
    checkNoOverlap(records);
    if (!names.count(root + "/" + std::string(kDataVersionPath))) {
      bad("no " + std::string(kDataVersionPath) + " record; not a PT2 archive");
    }
    return records;
  }

 private:
  [[noreturn]] void bad(const std::string& what) const {
    throw Error(ErrorKind::kBadArchive, path_.string() + ": " + what);
  }

  bool looksLikeZip() const {
    return file_.size() >= 4 &&
           zip::loadLE<std::uint32_t>(file_.data()) == zip::kLocalHeaderSignature;
  }

  // The end of central directory record ends the file, followed only by its comment.
  std::size_t findEndOfCentralDir() const {
    if (file_.size() >= zip::kEndOfCentralDirSize) {
      const std::size_t last = file_.size() - zip::kEndOfCentralDirSize;
      const std::size_t first = last > zip::kMaxCommentSize ? last - zip::kMaxCommentSize : 0;
      for (std::size_t pos = last + 1; pos-- > first;) {
        const char* p = file_.data() + pos;
        if (zip::loadLE<std::uint32_t>(p) != zip::kEndOfCentralDirSignature) continue;
        const std::size_t comment_size = zip::loadLE<std::uint16_t>(p + 20);
        if (comment_size == last - pos) return pos;
      }
    }
    if (looksLikeZip()) bad("truncated zip archive (no end of central directory record)");
    bad("not a zip archive");
  }

  Directory readDirectory() const {
    const std::size_t eocd = findEndOfCentralDir();
    FieldReader reader(file_.substr(eocd, zip::kEndOfCentralDirSize));
    reader.skip(4);
    const std::uint16_t disk = reader.u16();
    const std::uint16_t directory_disk = reader.u16();
    const std::uint16_t disk_entries = reader.u16();
    Directory directory;
    directory.entries = reader.u16();
    directory.size = reader.u32();
    directory.offset = reader.u32();
    directory.limit = eocd;
    if (disk != 0 || directory_disk != 0 || disk_entries != directory.entries) {
      bad("spanned (multi-disk) zip archives are not supported");
    }
    if (eocd >= zip::kZip64LocatorSize &&
        zip::loadLE<std::uint32_t>(file_.data() + eocd - zip::kZip64LocatorSize) ==
            zip::kZip64LocatorSignature) {
      directory = readZip64Directory(eocd - zip::kZip64LocatorSize);
    }
    checkDirectoryBounds(directory);
    return directory;
  }

  Directory readZip64Directory(std::size_t locator) const {
    FieldReader locator_reader(file_.substr(locator, zip::kZip64LocatorSize));
    locator_reader.skip(4);
    const std::uint32_t record_disk = locator_reader.u32();
    const std::uint64_t record_offset = locator_reader.u64();
    const std::uint32_t total_disks = locator_reader.u32();
    if (record_disk != 0 || total_disks > 1) {
      bad("spanned (multi-disk) zip archives are not supported");
    }
    if (record_offset > locator || locator - record_offset < zip::kZip64EndOfCentralDirSize) {
      bad("zip64 end of central directory record at offset " + std::to_string(record_offset) +
          " is past the end of the file");
    }
    FieldReader reader(file_.substr(record_offset, locator - record_offset));
    if (reader.u32() != zip::kZip64EndOfCentralDirSignature) {
      bad("no zip64 end of central directory record at offset " + std::to_string(record_offset));
    }
    reader.skip(8 + 2 + 2);  // record size, version made by, version needed
    const std::uint32_t disk = reader.u32();
    const std::uint32_t directory_disk = reader.u32();
    const std::uint64_t disk_entries = reader.u64();
    Directory directory;
    directory.entries = reader.u64();
    directory.size = reader.u64();
    directory.offset = reader.u64();
    directory.limit = record_offset;
    if (disk != 0 || directory_disk != 0 || disk_entries != directory.entries) {
      bad("spanned (multi-disk) zip archives are not supported");
    }
    return directory;
  }

  void checkDirectoryBounds(const Directory& directory) const {
    if (directory.offset > directory.limit || directory.size > directory.limit - directory.offset) {
      bad("central directory (offset " + std::to_string(directory.offset) + ", size " +
          std::to_string(directory.size) + ") runs past the end of the file");
    }
    const std::uint64_t room = directory.size / zip::kCentralHeaderSize;
    if (directory.entries > room) {
      bad("central directory declares " + std::to_string(directory.entries) +
          " records but has room for at most " + std::to_string(room));
    }
  }

  CentralEntry readCentralEntry(FieldReader& reader, std::uint64_t index) const {
    const std::string which = "central directory entry " + std::to_string(index);
    if (reader.u32() != zip::kCentralHeaderSignature) bad(which + " has a bad signature");
    CentralEntry entry;
    reader.skip(2 + 2);  // version made by, version needed
    entry.flags = reader.u16();
    entry.method = reader.u16();
    reader.skip(2 + 2);  // time, date
    entry.crc32 = reader.u32();
    entry.compressed_size = reader.u32();
    entry.size = reader.u32();
    const std::uint16_t name_size = reader.u16();
    const std::uint16_t extra_size = reader.u16();
    const std::uint16_t comment_size = reader.u16();
    entry.disk = reader.u16();
    reader.skip(2 + 4);  // internal and external attributes
    entry.local_offset = reader.u32();
    entry.name = std::string(reader.bytes(name_size));
    const std::string_view extra = reader.bytes(extra_size);
    reader.skip(comment_size);
    if (!reader.ok()) bad(which + " runs past the end of the central directory");
    if (const std::string problem = nameProblem(entry.name); !problem.empty()) bad(problem);
    resolveZip64(entry, extra);
    return entry;
  }

  // Replaces maxed-out fields with their values from the zip64 extra field, which holds
  // exactly the fields that are maxed out, in this order.
  void resolveZip64(CentralEntry& entry, std::string_view extra) const {
    const bool need_size = entry.size == zip::kMax32;
    const bool need_compressed = entry.compressed_size == zip::kMax32;
    const bool need_offset = entry.local_offset == zip::kMax32;
    const bool need_disk = entry.disk == zip::kMax16;
    if (!need_size && !need_compressed && !need_offset && !need_disk) return;
    FieldReader fields(findZip64Extra(entry.name, extra));
    if (need_size) entry.size = fields.u64();
    if (need_compressed) entry.compressed_size = fields.u64();
    if (need_offset) entry.local_offset = fields.u64();
    if (need_disk) entry.disk = fields.u32();
    if (!fields.ok()) bad("record " + printable(entry.name) + ": zip64 extra field is too short");
  }

  std::string_view findZip64Extra(const std::string& name, std::string_view extra) const {
    FieldReader reader(extra);
    while (reader.remaining() > 0) {
      const std::uint16_t id = reader.u16();
      const std::uint16_t size = reader.u16();
      const std::string_view payload = reader.bytes(size);
      if (!reader.ok()) bad("record " + printable(name) + ": extra fields are malformed");
      if (id == zip::kZip64ExtraId) return payload;
    }
    bad("record " + printable(name) + ": zip64 extra field missing");
  }

  void checkEntry(const CentralEntry& entry) const {
    const std::string shown = "record " + printable(entry.name);
    if (entry.disk != 0) bad("spanned (multi-disk) zip archives are not supported");
    if (entry.flags & (zip::kFlagEncrypted | zip::kFlagStrongEncryption)) {
      bad(shown + " is encrypted; encrypted records are not supported");
    }
    if (entry.method != zip::kMethodStored) {
      bad(shown + " is compressed (method " + std::to_string(entry.method) +
          "); only stored records are supported");
    }
    if (entry.compressed_size != entry.size) {
      bad(shown + " is stored but its compressed size " + std::to_string(entry.compressed_size) +
          " differs from its size " + std::to_string(entry.size));
    }
  }

  void checkRoot(const std::string& name, std::string& root) const {
    const std::size_t slash = name.find('/');
    if (slash == std::string::npos) {
      bad("record " + printable(name) + " is not inside a top-level folder");
    }
    const std::string_view top = std::string_view(name).substr(0, slash);
    if (root.empty()) {
      root = std::string(top);
    } else if (top != root) {
      bad("records are not all under one top-level folder (found " + printable(root) + "/ and " +
          printable(top) + "/)");
    }
  }

  // Each record (local header and data) must end before the next one in the file starts:
  // overlapping records (one record's bytes read as part of another, the trick of "zip
  // bombs" and of archives that show each zip reader different contents) are refused.
  void checkNoOverlap(const std::vector<Record>& records) const {
    std::vector<const Record*> by_offset;
    by_offset.reserve(records.size());
    for (const Record& record : records) by_offset.push_back(&record);
    std::sort(by_offset.begin(), by_offset.end(), [](const Record* a, const Record* b) {
      return a->local_header_offset < b->local_header_offset;
    });
    for (std::size_t i = 1; i < by_offset.size(); ++i) {
      const Record& before = *by_offset[i - 1];
      const Record& after = *by_offset[i];
      if (before.data_offset + before.size > after.local_header_offset) {
        bad("record " + printable(before.name) + " (offset " +
            std::to_string(before.local_header_offset) + " to " +
            std::to_string(before.data_offset + before.size) + ") overlaps record " +
            printable(after.name) + " (offset " + std::to_string(after.local_header_offset) + ")");
      }
    }
  }

  // Reads the local header and returns where the record's data starts. Records lie before
  // the central directory, so that is the bound for headers and data.
  std::uint64_t locateData(const CentralEntry& entry, std::uint64_t records_end) const {
    const std::string shown = "record " + printable(entry.name);
    const std::string at = " at offset " + std::to_string(entry.local_offset);
    if (entry.local_offset > records_end) bad(shown + ": local header" + at + " is past the end");
    FieldReader reader(file_.substr(entry.local_offset, records_end - entry.local_offset));
    if (reader.u32() != zip::kLocalHeaderSignature) {
      bad(shown + ": no local header" + at + (reader.ok() ? "" : " (truncated)"));
    }
    reader.skip(2 + 2);  // version needed, flags
    const std::uint16_t method = reader.u16();
    reader.skip(2 + 2 + 4 + 4 + 4);  // time, date, crc-32, sizes: may be in a data descriptor
    const std::uint16_t name_size = reader.u16();
    const std::uint16_t extra_size = reader.u16();
    const std::string_view local_name = reader.bytes(name_size);
    reader.skip(extra_size);
    if (!reader.ok()) bad(shown + ": local header" + at + " is truncated");
    if (local_name != entry.name) {
      bad(shown + ": local header name does not match the central directory");
    }
    if (method != entry.method) {
      bad(shown + ": local header method " + std::to_string(method) +
          " differs from the central directory");
    }
    if (entry.size > reader.remaining()) {
      bad(shown + ": data (offset " + std::to_string(entry.local_offset + reader.position()) +
          ", size " + std::to_string(entry.size) + ") runs past the end of the record area");
    }
    return entry.local_offset + reader.position();
  }

  const std::filesystem::path& path_;
  std::string_view file_;
};

[[noreturn]] void ioError(const std::filesystem::path& path, const std::string& what, int error) {
  throw Error(ErrorKind::kIo, path.string() + ": " + what + ": " + std::strerror(error));
}

[[noreturn]] void notRegular(const std::filesystem::path& path, mode_t mode) {
  const char* kind = S_ISFIFO(mode)   ? "a FIFO"
                     : S_ISCHR(mode)  ? "a character device"
                     : S_ISBLK(mode)  ? "a block device"
                     : S_ISDIR(mode)  ? "a directory"
                     : S_ISSOCK(mode) ? "a socket"
                                      : "a special file";
  throw Error(ErrorKind::kIo, path.string() + ": not a regular file (" + kind +
                                  "); an archive must be a regular file");
}

// Closes a descriptor when leaving scope unless released.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

}  // namespace

ArchiveReader::ArchiveReader(const std::filesystem::path& path) : path_(path) {
  // A FIFO, a device or a directory is refused before it is opened, where stat() can tell;
  // O_NONBLOCK covers one swapped in since: opening a FIFO without a writer (or some
  // devices) would otherwise block. O_NOCTTY: a terminal never becomes ours.
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0 && !S_ISREG(info.st_mode)) notRegular(path, info.st_mode);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) ioError(path, "cannot open", errno);
  FdCloser closer{fd};
  if (::fstat(fd, &info) != 0) ioError(path, "cannot stat", errno);
  if (!S_ISREG(info.st_mode)) notRegular(path, info.st_mode);
  // Reads of a regular file never block, but the flag would stay on the descriptor.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    ioError(path, "cannot set file flags", errno);
  }
  if (info.st_size == 0) {
    throw Error(ErrorKind::kBadArchive, path.string() + ": empty file, not a zip archive");
  }
  if (static_cast<std::uint64_t>(info.st_size) > SIZE_MAX) {
    throw Error(ErrorKind::kIo, path.string() + ": too large to map");
  }
  map_size_ = static_cast<std::size_t>(info.st_size);
  void* map = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) ioError(path, "cannot map", errno);
  map_ = static_cast<const char*>(map);
  // From here on a read of the map can fault if another process truncates the file.
  guard::registerMap(map_, map_size_, path_.c_str());
  try {
    records_ = Parser(path_, std::string_view(map_, map_size_)).parse(root_);
  } catch (...) {
    guard::unregisterMap(map_);
    ::munmap(const_cast<char*>(map_), map_size_);
    throw;
  }
  fd_ = closer.release();
}

ArchiveReader::~ArchiveReader() {
  guard::unregisterMap(map_);
  ::munmap(const_cast<char*>(map_), map_size_);
  ::close(fd_);
}

const Record* ArchiveReader::find(std::string_view relative_name) const {
  for (const Record& record : records_) {
    const std::string_view name = record.name;
    if (name.size() == root_.size() + 1 + relative_name.size() &&
        name.substr(root_.size() + 1) == relative_name) {
      return &record;
    }
  }
  return nullptr;
}

std::string_view ArchiveReader::data(const Record& record) const {
  return std::string_view(map_ + record.data_offset, static_cast<std::size_t>(record.size));
}

void ArchiveReader::prefetch(const Record& record) const {
  if (record.size == 0) return;
  // The map starts on a page boundary, so rounding the start down stays inside it.
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto first = reinterpret_cast<std::uintptr_t>(map_ + record.data_offset) & ~(page - 1);
  const auto end = reinterpret_cast<std::uintptr_t>(map_ + record.data_offset + record.size);
  void* const start = reinterpret_cast<void*>(first);
  const std::size_t length = end - first;
  // Advice only: failures (a signal, memory pressure, a file truncated under us) are left
  // to the reads that follow, which fault the pages in themselves.
  if (::madvise(start, length, MADV_POPULATE_READ) == 0) return;
  if (errno == EINVAL) ::madvise(start, length, MADV_WILLNEED);  // before Linux 5.14
}

void ArchiveReader::checkCrc(const Record& record) const {
  if (zip::crc32Of(data(record)) != record.crc32) {
    throw Error(ErrorKind::kBadArchive, path_.string() + ": record " + printable(record.name) +
                                            " is damaged (its CRC-32 does not match its data)");
  }
}

std::string_view ArchiveReader::checkedData(const Record& record) const {
  prefetch(record);
  checkCrc(record);
  return data(record);
}

std::vector<std::string> ArchiveReader::programNames() const {
  std::vector<std::string> names;
  for (const Record& record : records_) {
    const std::string_view relative = std::string_view(record.name).substr(root_.size() + 1);
    if (relative.size() > kModelsDir.size() + kModelsExtension.size() &&
        relative.starts_with(kModelsDir) && relative.ends_with(kModelsExtension)) {
      names.emplace_back(relative);
    }
  }
  return names;
}

}  // namespace exmode::archive
