// rewriteArchive(): writes a copy of an archive with some records' bytes replaced, keeping
// every other record byte for byte and the serialization id consistent, and replaces the
// output file atomically so a failure never leaves a half-written archive behind.
//
// torch.export.save writes the weights first and the programs after them, so everything
// before the first record that changes is copied as one range, exactly (the kernel may
// share the blocks on file systems with reflinks); only the records from there on are laid
// out anew.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "archive/mapped_file_guard.h"
#include "archive/zip_format.h"
#include "exmode/archive.h"
#include "exmode/error.h"

namespace exmode::archive {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void ioError(const fs::path& path, const std::string& what, int error) {
  throw Error(ErrorKind::kIo, path.string() + ": " + what + ": " + std::strerror(error));
}

// A record to write: the input's, or new bytes for it.
struct OutputRecord {
  const Record* input;
  bool changed = false;
  std::span<const std::string_view> chunks;  // the new bytes, when changed
  // Known from the input for kept records; for new bytes, computed as they are written.
  std::optional<std::uint32_t> crc32;
};

// The records to write, in input order, and the storage for a recomputed id. Records point
// into the plan, so it stays where it is built.
struct Plan {
  std::vector<OutputRecord> records;
  // The id record, when it must be recomputed from the output's CRCs: that is done when
  // its turn to be written comes (torch writes it last), so that the CRCs of new records
  // come from writing them rather than from a pass of their own over their bytes.
  OutputRecord* id_record = nullptr;
  std::string serialization_id;
  std::string_view serialization_id_chunk;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
};

std::string_view relativeName(const ArchiveReader& reader, const Record& record) {
  return std::string_view(record.name).substr(reader.root().size() + 1);
}

std::unordered_map<std::string_view, const Replacement*> indexReplacements(
    const ArchiveReader& reader, const std::vector<Replacement>& replacements) {
  std::unordered_map<std::string_view, const Replacement*> index;
  for (const Replacement& replacement : replacements) {
    if (!reader.find(replacement.relative_name)) {
      throw Error(ErrorKind::kBadArchive, reader.path().string() + ": cannot replace record " +
                                              replacement.relative_name + ": no such record");
    }
    if (!index.emplace(replacement.relative_name, &replacement).second) {
      throw Error(ErrorKind::kBadArchive, reader.path().string() + ": record " +
                                              replacement.relative_name +
                                              " is replaced more than once");
    }
  }
  return index;
}

// The serialization id over `records` as torch computes it: all records but the id itself,
// names and CRC-32s in write order. A new record whose CRC is not known yet (one written
// after the id, which torch never does) is checksummed here.
std::string idOf(std::vector<OutputRecord>& records, std::string_view root) {
  std::vector<std::string> names;
  std::vector<std::uint32_t> crcs;
  for (OutputRecord& record : records) {
    const std::string_view relative = std::string_view(record.input->name).substr(root.size() + 1);
    if (relative == kSerializationIdPath) continue;
    if (!record.crc32) record.crc32 = zip::crc32Update(0, record.chunks);
    names.emplace_back(relative);
    crcs.push_back(*record.crc32);
  }
  return serializationId(names, crcs);
}

// Marks the id record for recomputation only when the input's id was consistent with its
// records: an id written by another tool, or already stale, is not ours to reinterpret,
// so it is copied.
void planSerializationId(const ArchiveReader& reader,
                         const std::unordered_map<std::string_view, const Replacement*>& index,
                         Plan& plan) {
  const Record* id = reader.find(kSerializationIdPath);
  if (!id || index.count(kSerializationIdPath)) return;
  std::vector<OutputRecord> input;
  for (const Record& record : reader.records()) {
    input.push_back(OutputRecord{.input = &record, .crc32 = record.crc32});
  }
  if (reader.data(*id) != idOf(input, reader.root())) return;
  for (OutputRecord& record : plan.records) {
    if (record.input == id) plan.id_record = &record;
  }
}

// The id record's bytes once every CRC it covers is known: new bytes when they differ.
void settleSerializationId(const ArchiveReader& reader, Plan& plan) {
  OutputRecord& record = *plan.id_record;
  plan.serialization_id = idOf(plan.records, reader.root());
  if (plan.serialization_id == reader.data(*record.input)) return;
  plan.serialization_id_chunk = plan.serialization_id;
  record.changed = true;
  record.chunks = std::span<const std::string_view>(&plan.serialization_id_chunk, 1);
  record.crc32 = zip::crc32Of(plan.serialization_id);
}

void planRecords(const ArchiveReader& reader, const std::vector<Replacement>& replacements,
                 Plan& plan) {
  const auto index = indexReplacements(reader, replacements);
  plan.records.reserve(reader.records().size());
  for (const Record& record : reader.records()) {
    const auto replaced = index.find(relativeName(reader, record));
    if (replaced == index.end()) {
      plan.records.push_back(OutputRecord{.input = &record, .crc32 = record.crc32});
    } else {
      plan.records.push_back(
          OutputRecord{.input = &record, .changed = true, .chunks = replaced->second->chunks});
    }
  }
  planSerializationId(reader, index, plan);
}

// Where the output really goes: a symlink is followed so the file it points to is replaced.
fs::path resolveTarget(const fs::path& out_path) {
  std::error_code error;
  if (!fs::is_symlink(out_path, error)) return out_path;
  fs::path target = fs::canonical(out_path, error);
  if (error) ioError(out_path, "cannot resolve symbolic link", error.value());
  return target;
}

struct stat statInput(const ArchiveReader& reader) {
  struct stat info {};
  if (::fstat(reader.fd(), &info) != 0) ioError(reader.path(), "cannot stat", errno);
  return info;
}

// Reads of the input that a shrinking file would break already fail (a bus error on the
// map, a short copy); this catches the rest, such as a file rewritten in place while it
// was copied, as far as its size and modification time tell.
void checkInputUnchanged(const ArchiveReader& reader, const struct stat& before) {
  const struct stat now = statInput(reader);
  if (static_cast<std::uint64_t>(now.st_size) == reader.mapped().size() &&
      now.st_size == before.st_size && now.st_mtim.tv_sec == before.st_mtim.tv_sec &&
      now.st_mtim.tv_nsec == before.st_mtim.tv_nsec) {
    return;
  }
  throw Error(ErrorKind::kIo, reader.path().string() +
                                  ": changed or truncated while being read (now " +
                                  std::to_string(now.st_size) + " bytes, " +
                                  std::to_string(reader.mapped().size()) + " when opened)");
}

void syncDirectory(const fs::path& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ioError(directory, "cannot open directory", errno);
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  // Some file systems cannot sync directories; the rename is then as durable as they allow.
  if (result != 0 && error != EINVAL && error != ENOTSUP) {
    ioError(directory, "fsync failed", error);
  }
}

// Copies the records before the first changed one as they are (when the input's layout
// allows it, which torch's always does), then writes the rest one by one. With nothing
// changed, all but the last record are copied as they are.
void writeRecords(const ArchiveReader& reader, Plan& plan, const fs::path& temp, int fd,
                  const WriteOptions& options) {
  ArchiveWriter writer(temp, fd);
  std::size_t first_changed = 0;
  while (first_changed + 1 < plan.records.size() && !plan.records[first_changed].changed &&
         &plan.records[first_changed] != plan.id_record) {
    ++first_changed;
  }
  const std::size_t start = writer.copyLeadingRecords(reader, first_changed) ? first_changed : 0;
  for (std::size_t i = start; i < plan.records.size(); ++i) {
    OutputRecord& record = plan.records[i];
    if (&record == plan.id_record) settleSerializationId(reader, plan);
    if (record.changed) {
      record.crc32 = writer.add(record.input->name, record.chunks, record.crc32, &reader);
    } else {
      writer.copy(reader, *record.input);
    }
  }
  writer.finish(options);
}

}  // namespace

Replacement::Replacement(std::string name, std::vector<std::string_view> data_chunks)
    : relative_name(std::move(name)), chunks(std::move(data_chunks)) {}

Replacement::Replacement(std::string name, std::string_view data)
    : relative_name(std::move(name)), chunks{data} {}

void rewriteArchive(const ArchiveReader& reader, const std::vector<Replacement>& replacements,
                    const std::filesystem::path& out_path, const WriteOptions& options) {
  Plan plan;
  planRecords(reader, replacements, plan);
  const struct stat input = statInput(reader);
  const mode_t mode = input.st_mode & 07777;
  const fs::path target = resolveTarget(out_path);
  const fs::path directory = target.has_parent_path() ? target.parent_path() : fs::path(".");

  std::string temp_leaf = ".";
  temp_leaf += target.filename().string();
  temp_leaf += ".exmode-XXXXXX";
  std::string temp_name = (directory / temp_leaf).string();
  const int fd = ::mkostemp(temp_name.data(), O_CLOEXEC);
  if (fd < 0) ioError(directory, "cannot create a temporary file", errno);
  const fs::path temp = temp_name;
  // Removed by the bus-error handler if the input's map fails while it is written.
  guard::TemporaryFileGuard temp_guard(temp.c_str());
  try {
    if (::fchmod(fd, mode) != 0) {
      const int error = errno;
      ::close(fd);
      ioError(temp, "cannot set permissions", error);
    }
    writeRecords(reader, plan, temp, fd, options);
    checkInputUnchanged(reader, input);
    if (::rename(temp.c_str(), target.c_str()) != 0) {
      ioError(target, "cannot replace with " + temp.filename().string(), errno);
    }
    temp_guard.release();
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  if (options.sync) syncDirectory(directory);
}

}  // namespace exmode::archive
