// exmode_bench_floor: the least time a file switch built the way exmode's is can take.
//
//   exmode_bench_floor IN OUT
//
// Does only what every such switch must, the way exmode does it: map IN; check each
// program record's CRC-32 on a second thread while simdjson On-Demand indexes the
// program's JSON in place (stage 1, which exmode's reader runs first) and the main thread
// reads every node's target; then write OUT with IN's bytes, all copied by the kernel
// (copy_file_range, as exmode copies weights and a program's long unchanged stretches; a
// switched program also writes its changed text from memory, which this leaves out), and
// rename it into place. No IR is built, nothing is verified, switched or serialized.
// Prints one JSON object:
//   {"read_ns", "write_ns", "nodes"}
// read: map, index, walk and CRC; write: the copy and the rename. Exit status 2 on a bad
// command line, 1 on any failure.
#include <fcntl.h>
#include <simdjson.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "exmode/archive.h"

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t nanoseconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count();
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

// Indexes one program and reads the target of each of its nodes; returns the node count.
std::size_t walkNodes(std::string_view json, bool padded) {
  simdjson::ondemand::parser parser;
  simdjson::padded_string copy;
  simdjson::ondemand::document doc;
  const auto error = padded ? parser.iterate(json.data(), json.size(),
                                             json.size() + simdjson::SIMDJSON_PADDING)
                                  .get(doc)
                            : parser.iterate(copy = simdjson::padded_string(json)).get(doc);
  if (error) throw std::runtime_error(simdjson::error_message(error));
  std::size_t nodes = 0;
  for (auto node : doc["graph_module"]["graph"]["nodes"].get_array()) {
    std::string_view target;
    if (node.find_field_unordered("target").get_string().get(target)) {
      throw std::runtime_error("a node without a string target");
    }
    ++nodes;
  }
  return nodes;
}

void writeAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), std::min<std::size_t>(bytes.size(), 1 << 22));
    if (n < 0) fail("write");
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

// By the kernel; through a buffer where it cannot (across filesystems), as exmode does.
void copyRange(int in, int out, std::uint64_t from, std::uint64_t to) {
  auto offset = static_cast<off_t>(from);
  while (static_cast<std::uint64_t>(offset) < to) {
    const ssize_t n = ::copy_file_range(in, &offset, out, nullptr,
                                        to - static_cast<std::uint64_t>(offset), 0);
    if (n > 0) continue;
    if (n == 0 || (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP))
      fail("copy_file_range");
    std::vector<char> buffer(1 << 22);
    while (static_cast<std::uint64_t>(offset) < to) {
      const std::size_t want =
          std::min<std::uint64_t>(buffer.size(), to - static_cast<std::uint64_t>(offset));
      const ssize_t got = ::pread(in, buffer.data(), want, offset);
      if (got <= 0) fail("pread");
      writeAll(out, {buffer.data(), static_cast<std::size_t>(got)});
      offset += got;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: exmode_bench_floor IN OUT\n";
    return 2;
  }
  try {
    const auto t0 = Clock::now();
    exmode::archive::ArchiveReader reader(argv[1]);
    const auto file_size = std::filesystem::file_size(argv[1]);
    std::vector<const exmode::archive::Record*> programs;
    for (const std::string& name : reader.programNames()) programs.push_back(reader.find(name));
    std::size_t nodes = 0;
    for (const auto* record : programs) {
      reader.prefetch(*record);
      std::exception_ptr crc_error;
      std::thread crc([&] {
        try {
          reader.checkCrc(*record);
        } catch (...) {
          crc_error = std::current_exception();
        }
      });
      const bool padded =
          record->data_offset + record->size + simdjson::SIMDJSON_PADDING <= file_size;
      try {
        nodes += walkNodes(reader.data(*record), padded);
      } catch (...) {
        crc.join();
        throw;
      }
      crc.join();
      if (crc_error) std::rethrow_exception(crc_error);
    }
    const auto t1 = Clock::now();

    const std::string out = argv[2];
    const std::string temporary = out + ".floor-tmp";
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("open " + temporary);
    copyRange(reader.fd(), fd, 0, file_size);
    if (::close(fd) != 0) fail("close");
    std::filesystem::rename(temporary, out);
    const auto t2 = Clock::now();
    std::cout << "{\"read_ns\": " << nanoseconds(t0, t1) << ", \"write_ns\": " << nanoseconds(t1, t2)
              << ", \"nodes\": " << nodes << "}\n";
  } catch (const std::exception& e) {
    std::cerr << "exmode_bench_floor: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
