// rewriteArchive(): writes a copy of an archive with some records' bytes replaced, keeping
// every other record byte for byte and the serialization id consistent, and replaces the
// output file atomically so a failure never leaves a half-written archive behind.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "archive/zip_format.h"
#include "exmode/archive.h"
#include "exmode/error.h"

namespace exmode::archive {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void ioError(const fs::path& path, const std::string& what, int error) {
  throw Error(ErrorKind::kIo, path.string() + ": " + what + ": " + std::strerror(error));
}

struct OutputRecord {
  std::string_view name;  // full name
  std::string_view data;
  std::uint32_t crc32;
};

// The records to write, in input order, and the storage for a recomputed id.
struct Plan {
  std::vector<OutputRecord> records;
  std::string serialization_id;
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

// The serialization id over `records` as torch computes it: all records but the id itself.
std::string idOf(const std::vector<OutputRecord>& records, std::string_view root) {
  std::vector<std::string> names;
  std::vector<std::uint32_t> crcs;
  for (const OutputRecord& record : records) {
    const std::string_view relative = record.name.substr(root.size() + 1);
    if (relative == kSerializationIdPath) continue;
    names.emplace_back(relative);
    crcs.push_back(record.crc32);
  }
  return serializationId(names, crcs);
}

// Recomputes the id record only when the input's id was consistent with its records: an id
// written by another tool, or already stale, is not ours to reinterpret, so it is copied.
void updateSerializationId(const ArchiveReader& reader,
                           const std::unordered_map<std::string_view, const Replacement*>& index,
                           Plan& plan) {
  const Record* id = reader.find(kSerializationIdPath);
  if (!id || index.count(kSerializationIdPath)) return;
  std::vector<OutputRecord> input;
  for (const Record& record : reader.records()) {
    input.push_back(OutputRecord{record.name, {}, record.crc32});
  }
  if (reader.data(*id) != idOf(input, reader.root())) return;
  plan.serialization_id = idOf(plan.records, reader.root());
  for (OutputRecord& record : plan.records) {
    if (record.name == id->name) {
      record.data = plan.serialization_id;
      record.crc32 = zip::crc32Of(record.data);
    }
  }
}

Plan planRecords(const ArchiveReader& reader, const std::vector<Replacement>& replacements) {
  const auto index = indexReplacements(reader, replacements);
  Plan plan;
  plan.records.reserve(reader.records().size());
  for (const Record& record : reader.records()) {
    const auto replaced = index.find(relativeName(reader, record));
    if (replaced == index.end()) {
      plan.records.push_back(OutputRecord{record.name, reader.data(record), record.crc32});
    } else {
      const std::string_view data = replaced->second->data;
      plan.records.push_back(OutputRecord{record.name, data, zip::crc32Of(data)});
    }
  }
  updateSerializationId(reader, index, plan);
  return plan;
}

// Where the output really goes: a symlink is followed so the file it points to is replaced.
fs::path resolveTarget(const fs::path& out_path) {
  std::error_code error;
  if (!fs::is_symlink(out_path, error)) return out_path;
  fs::path target = fs::canonical(out_path, error);
  if (error) ioError(out_path, "cannot resolve symbolic link", error.value());
  return target;
}

mode_t inputMode(const ArchiveReader& reader) {
  struct stat info {};
  if (::stat(reader.path().c_str(), &info) != 0) ioError(reader.path(), "cannot stat", errno);
  return info.st_mode & 07777;
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

void writeRecords(const Plan& plan, const fs::path& temp, int fd) {
  ArchiveWriter writer(temp, fd);
  for (const OutputRecord& record : plan.records) {
    writer.add(record.name, record.data, record.crc32);
  }
  writer.finish();
}

}  // namespace

void rewriteArchive(const ArchiveReader& reader, const std::vector<Replacement>& replacements,
                    const std::filesystem::path& out_path) {
  const Plan plan = planRecords(reader, replacements);
  const mode_t mode = inputMode(reader);
  const fs::path target = resolveTarget(out_path);
  const fs::path directory = target.has_parent_path() ? target.parent_path() : fs::path(".");

  std::string temp_leaf = ".";
  temp_leaf += target.filename().string();
  temp_leaf += ".exmode-XXXXXX";
  std::string temp_name = (directory / temp_leaf).string();
  const int fd = ::mkostemp(temp_name.data(), O_CLOEXEC);
  if (fd < 0) ioError(directory, "cannot create a temporary file", errno);
  const fs::path temp = temp_name;
  try {
    if (::fchmod(fd, mode) != 0) {
      const int error = errno;
      ::close(fd);
      ioError(temp, "cannot set permissions", error);
    }
    writeRecords(plan, temp, fd);
    if (::rename(temp.c_str(), target.c_str()) != 0) {
      ioError(target, "cannot replace with " + temp.filename().string(), errno);
    }
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  syncDirectory(directory);
}

}  // namespace exmode::archive
