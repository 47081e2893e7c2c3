// serializationId(): the `.data/serialization_id` torch's writer stores
// (caffe2/serialize/inline_container.cc, PyTorchStreamWriter::writeSerializationId), so a
// rewritten archive carries the id torch would have written for the same records.
#include <cinttypes>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <unordered_set>

#include "exmode/archive.h"

namespace exmode::archive {
namespace {

// c10::hash_combine.
std::uint64_t combine(std::uint64_t seed, std::uint64_t value) {
  return seed ^ (value + 0x9e3779b9 + (seed << 6) + (seed >> 2));
}

}  // namespace

std::string serializationId(const std::vector<std::string>& relative_names,
                            const std::vector<std::uint32_t>& crc32s) {
  if (relative_names.size() != crc32s.size()) {
    throw std::invalid_argument("serializationId: one CRC-32 per record name is needed");
  }
  std::uint64_t crc_part = 0;
  for (std::uint32_t crc : crc32s) crc_part = combine(crc_part, crc);

  // torch folds the name hashes in the iteration order of its `files_written_`, a
  // std::unordered_set<std::string> filled in write order. That order depends on the
  // container's bucket layout and growth history, so we rebuild the same container the
  // same way, one insert at a time (the range constructor sizes the buckets up front and
  // can iterate differently): with libstdc++, which torch is built with, this reproduces
  // torch's ids exactly.
  std::unordered_set<std::string> written;
  for (const std::string& name : relative_names) written.insert(name);
  std::uint64_t name_part = 0;
  for (const std::string& name : written) {
    name_part = combine(name_part, std::hash<std::string>{}(name));
  }

  char id[41];
  std::snprintf(id, sizeof id, "%020" PRIu64 "%020" PRIu64, name_part, crc_part);
  return id;
}

}  // namespace exmode::archive
