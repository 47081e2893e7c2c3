// Tests of the archive layer: reading and writing PT2 zip archives, rewriting them, the
// serialization id, and refusal of malformed or unsupported archives.
#include "exmode/archive.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "archive/file_copy.h"
#include "archive/zip_format.h"
#include "exmode/error.h"

namespace exmode::archive {
namespace {

namespace fs = std::filesystem;
using Entries = std::vector<std::pair<std::string, std::string>>;

std::string readBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void writeBytes(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void writeArchive(const fs::path& path, const Entries& entries) {
  ArchiveWriter writer(path);
  for (const auto& [name, data] : entries) writer.add(name, data);
  writer.finish();
}

// The id torch would write for `entries` (full names under `root`), excluding the id.
std::string idFor(const Entries& entries, const std::string& root) {
  std::vector<std::string> names;
  std::vector<std::uint32_t> crcs;
  for (const auto& [name, data] : entries) {
    const std::string relative = name.substr(root.size() + 1);
    if (relative == kSerializationIdPath) continue;
    names.push_back(relative);
    crcs.push_back(zip::crc32Of(data));
  }
  return serializationId(names, crcs);
}

// A small archive shaped like torch.export.save's output, with a consistent id.
Entries torchLikeEntries() {
  Entries entries = {
      {"arc/data/weights/weight_0", std::string(16, '\x01')},
      {"arc/data/weights/model_weights_config.json", "{\"config\": {}}"},
      {"arc/models/model.json", "{\"graph_module\": {}}"},
      {"arc/models/other.json", "{}"},
      {"arc/data/sample_inputs/model.pt", ""},
      {"arc/archive_format", "pt2"},
      {"arc/archive_version", "0"},
      {"arc/.data/version", "6\n"},
      {"arc/byteorder", "little"},
  };
  entries.emplace_back("arc/.data/serialization_id", idFor(entries, "arc"));
  return entries;
}

// `size` bytes that differ from one position to the next, so misplaced copies show.
std::string noise(std::size_t size, unsigned seed) {
  std::mt19937 generator(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(generator() & 0xFF);
  return bytes;
}

// torchLikeEntries() with weights large enough to be copied by the kernel rather than
// through the writer's buffer, and a weight of an odd size so later records are unaligned
// in the input's file before padding.
Entries torchLikeEntriesWithWeights() {
  Entries entries = {
      {"arc/data/weights/weight_0", noise(300 * 1024 + 3, 1)},
      {"arc/data/weights/weight_1", noise(5, 2)},
      {"arc/data/weights/weight_2", noise(2 * 1024 * 1024 + 17, 3)},
      {"arc/data/weights/model_weights_config.json", "{\"config\": {}}"},
      {"arc/models/model.json", "{\"graph_module\": {}}"},
      {"arc/data/sample_inputs/model.pt", noise(70 * 1024, 4)},
      {"arc/archive_format", "pt2"},
      {"arc/.data/version", "6\n"},
      {"arc/byteorder", "little"},
  };
  entries.emplace_back("arc/.data/serialization_id", idFor(entries, "arc"));
  return entries;
}

// Whether Python's zipfile opens the archive and finds every CRC right; true when there
// is no python3 to ask.
bool pythonZipfileAccepts(const fs::path& file) {
  if (std::system("python3 -c '' 2>/dev/null") != 0) return true;
  const std::string command =
      "python3 -c 'import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() is not "
      "None)' '" +
      file.string() + "'";
  return std::system(command.c_str()) == 0;
}

std::uint16_t load16(const std::string& bytes, std::size_t at) {
  return zip::loadLE<std::uint16_t>(bytes.data() + at);
}

void store16(std::string& bytes, std::size_t at, std::uint16_t value) {
  bytes[at] = static_cast<char>(value & 0xFF);
  bytes[at + 1] = static_cast<char>(value >> 8);
}

void store32(std::string& bytes, std::size_t at, std::uint32_t value) {
  for (std::size_t i = 0; i < 4; ++i) bytes[at + i] = static_cast<char>((value >> (8 * i)) & 0xFF);
}

// Offset of the central directory header of the record named `name`.
std::size_t centralHeaderOf(const std::string& bytes, const std::string& name) {
  const std::string signature("PK\1\2", 4);
  for (std::size_t at = bytes.find(signature); at != std::string::npos;
       at = bytes.find(signature, at + 1)) {
    if (load16(bytes, at + 28) == name.size() && bytes.compare(at + 46, name.size(), name) == 0) {
      return at;
    }
  }
  ADD_FAILURE() << "no central header for " << name;
  return 0;
}

class ArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::path(::testing::TempDir()) / "exmode-archive-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path path(const std::string& name) const { return dir_ / name; }

  // Writes `bytes` to a file and expects reading it to fail with kBadArchive and a
  // one-line message naming the file and containing `expected`.
  void expectBad(const std::string& bytes, const std::string& expected) {
    const fs::path file = path("bad.pt2");
    writeBytes(file, bytes);
    expectBadFile(file, expected);
  }

  static void expectBadFile(const fs::path& file, const std::string& expected) {
    try {
      ArchiveReader reader(file);
      ADD_FAILURE() << "read succeeded; expected an error containing: " << expected;
    } catch (const Error& error) {
      const std::string message = error.what();
      EXPECT_EQ(error.kind(), ErrorKind::kBadArchive) << message;
      EXPECT_EQ(message.rfind(file.string() + ": ", 0), 0u) << message;
      EXPECT_NE(message.find(expected), std::string::npos) << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
  }

  std::string torchLikeBytes() {
    const fs::path file = path("source.pt2");
    writeArchive(file, torchLikeEntries());
    return readBytes(file);
  }

  std::vector<std::string> directoryListing() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  fs::path dir_;
};

TEST(ZipFormat, Crc32MatchesTheStandardCheckValue) {
  EXPECT_EQ(zip::crc32Of("123456789"), 0xCBF43926u);
  EXPECT_EQ(zip::crc32Of(""), 0u);
}

TEST(ZipFormat, FieldReaderStopsAtTheEnd) {
  zip::FieldReader reader(std::string_view("\x01\x02\x03", 3));
  EXPECT_EQ(reader.u16(), 0x0201);
  EXPECT_TRUE(reader.ok());
  EXPECT_EQ(reader.u16(), 0);
  EXPECT_FALSE(reader.ok());
  EXPECT_EQ(reader.u32(), 0u);
}

TEST(SerializationId, IsFortyDigitsOfNameHashThenCrcHash) {
  const std::string id = serializationId({"a", "b"}, {1, 2});
  ASSERT_EQ(id.size(), 40u);
  EXPECT_EQ(id.find_first_not_of("0123456789"), std::string::npos);
  // The CRC half is c10::hash_combine folded over the CRCs in write order.
  std::uint64_t crc = 0;
  for (std::uint64_t value : {1u, 2u}) crc ^= value + 0x9e3779b9 + (crc << 6) + (crc >> 2);
  EXPECT_EQ(id.substr(20), std::string(20 - std::to_string(crc).size(), '0') + std::to_string(crc));
  EXPECT_EQ(serializationId({}, {}), std::string(40, '0'));
  EXPECT_NE(serializationId({"a", "b"}, {1, 3}), id);
  EXPECT_NE(serializationId({"a", "c"}, {1, 2}).substr(0, 20), id.substr(0, 20));
  EXPECT_THROW(serializationId({"a"}, {}), std::invalid_argument);
}

TEST_F(ArchiveTest, WritesAndReadsBackRecords) {
  const Entries entries = torchLikeEntries();
  writeArchive(path("m.pt2"), entries);
  ArchiveReader reader(path("m.pt2"));
  EXPECT_EQ(reader.root(), "arc");
  ASSERT_EQ(reader.records().size(), entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Record& record = reader.records()[i];
    EXPECT_EQ(record.name, entries[i].first);
    EXPECT_EQ(reader.data(record), entries[i].second);
    EXPECT_EQ(record.size, entries[i].second.size());
    EXPECT_EQ(record.crc32, zip::crc32Of(entries[i].second));
    EXPECT_EQ(record.data_offset % kDataAlignment, 0u) << record.name;
  }
  ASSERT_NE(reader.find("models/model.json"), nullptr);
  EXPECT_EQ(reader.find("models/model.json")->name, "arc/models/model.json");
  EXPECT_EQ(reader.find("arc/models/model.json"), nullptr);
  EXPECT_EQ(reader.find("models"), nullptr);
  EXPECT_EQ(reader.programNames(),
            (std::vector<std::string>{"models/model.json", "models/other.json"}));
}

TEST_F(ArchiveTest, ReaderKeepsHeaderOffsetsRawEntriesAndItsFile) {
  const Entries entries = torchLikeEntries();
  writeArchive(path("m.pt2"), entries);
  const std::string bytes = readBytes(path("m.pt2"));
  ArchiveReader reader(path("m.pt2"));
  std::uint64_t previous_end = 0;
  for (const Record& record : reader.records()) {
    SCOPED_TRACE(record.name);
    EXPECT_EQ(record.local_header_offset, previous_end);
    EXPECT_EQ(zip::loadLE<std::uint32_t>(bytes.data() + record.local_header_offset),
              zip::kLocalHeaderSignature);
    EXPECT_EQ(bytes.substr(record.local_header_offset + zip::kLocalHeaderSize, record.name.size()),
              record.name);
    // The raw central entry is where the end record says the directory is, name and all.
    const std::size_t central = centralHeaderOf(bytes, record.name);
    ASSERT_GE(record.central_entry.size(), zip::kCentralHeaderSize + record.name.size());
    EXPECT_EQ(record.central_entry.data() - reader.data(record).data(),
              static_cast<std::ptrdiff_t>(central - record.data_offset));
    EXPECT_EQ(record.central_entry.substr(zip::kCentralHeaderSize, record.name.size()),
              record.name);
    previous_end = record.data_offset + record.size;
    reader.prefetch(record);  // advice: nothing observable but that it does not fail
  }
  // The descriptor reads the same file.
  char first[4];
  ASSERT_EQ(::pread(reader.fd(), first, sizeof first, 0), 4);
  EXPECT_EQ(std::string_view(first, 4), std::string_view("PK\3\4", 4));
  EXPECT_EQ(::fcntl(reader.fd(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
}

TEST_F(ArchiveTest, PadsLikeTorchForEveryNameLength) {
  Entries entries = {{"r/.data/version", "6\n"}};
  for (std::size_t length = 1; length <= 130; ++length) {
    entries.emplace_back("r/" + std::string(length, 'n'), std::string(length % 7, 'd'));
  }
  writeArchive(path("m.pt2"), entries);
  const std::string bytes = readBytes(path("m.pt2"));
  ArchiveReader reader(path("m.pt2"));
  std::uint64_t local_offset = 0;  // records are contiguous: each header follows the data
  for (const Record& record : reader.records()) {
    EXPECT_EQ(record.data_offset % kDataAlignment, 0u) << record.name;
    const std::size_t extra = local_offset + zip::kLocalHeaderSize + record.name.size();
    ASSERT_EQ(bytes.substr(extra, 2), "FB");
    const std::uint16_t padding = load16(bytes, extra + 2);
    EXPECT_LT(padding, kDataAlignment);
    EXPECT_EQ(bytes.substr(extra + 4, padding), std::string(padding, 'Z'));
    EXPECT_EQ(extra + 4 + padding, record.data_offset);
    local_offset = record.data_offset + record.size;
  }
}

TEST_F(ArchiveTest, UsesTheGivenCrcForCopiedRecords) {
  ArchiveWriter writer(path("m.pt2"));
  writer.add("r/.data/version", "6\n");
  writer.add("r/a", "payload", 0x12345678u);
  writer.finish();
  ArchiveReader reader(path("m.pt2"));
  EXPECT_EQ(reader.find("a")->crc32, 0x12345678u);
}

TEST_F(ArchiveTest, WritesZip64EndRecordsForManyRecords) {
  constexpr std::size_t kCount = 0x10005;
  ArchiveWriter writer(path("m.pt2"));
  writer.add("r/.data/version", "6\n");
  for (std::size_t i = 1; i < kCount; ++i) writer.add("r/" + std::to_string(i), "x");
  writer.finish();
  const std::string bytes = readBytes(path("m.pt2"));
  const std::size_t eocd = bytes.size() - zip::kEndOfCentralDirSize;
  EXPECT_EQ(zip::loadLE<std::uint32_t>(bytes.data() + eocd), zip::kEndOfCentralDirSignature);
  EXPECT_EQ(load16(bytes, eocd + 10), zip::kMax16);
  EXPECT_EQ(zip::loadLE<std::uint32_t>(bytes.data() + eocd - zip::kZip64LocatorSize),
            zip::kZip64LocatorSignature);
  ArchiveReader reader(path("m.pt2"));
  ASSERT_EQ(reader.records().size(), kCount);
  EXPECT_EQ(reader.records().back().name, "r/" + std::to_string(kCount - 1));
  EXPECT_EQ(reader.data(reader.records().back()), "x");
}

TEST_F(ArchiveTest, SkipsEmptyDirectoryEntries) {
  writeArchive(path("m.pt2"), {{"arc/", ""}, {"arc/.data/", ""}, {"arc/.data/version", "6\n"}});
  ArchiveReader reader(path("m.pt2"));
  ASSERT_EQ(reader.records().size(), 1u);
  EXPECT_EQ(reader.records()[0].name, "arc/.data/version");
}

TEST_F(ArchiveTest, RewriteReplacesRecordsAndCopiesTheRestExactly) {
  const Entries entries = torchLikeEntries();
  writeArchive(path("in.pt2"), entries);
  ArchiveReader input(path("in.pt2"));
  rewriteArchive(input, {{"models/model.json", "{\"changed\": true}"}}, path("out.pt2"));

  ArchiveReader output(path("out.pt2"));
  ASSERT_EQ(output.records().size(), entries.size());
  Entries expected = entries;
  expected[2].second = "{\"changed\": true}";
  expected.back().second = idFor(expected, "arc");
  EXPECT_NE(expected.back().second, entries.back().second);
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const Record& record = output.records()[i];
    EXPECT_EQ(record.name, expected[i].first);
    EXPECT_EQ(output.data(record), expected[i].second) << record.name;
    EXPECT_EQ(record.crc32, zip::crc32Of(expected[i].second)) << record.name;
    EXPECT_EQ(record.data_offset % kDataAlignment, 0u);
  }
}

TEST_F(ArchiveTest, RewriteWithoutReplacementsIsAFixedPoint) {
  writeArchive(path("in.pt2"), torchLikeEntries());
  {
    ArchiveReader input(path("in.pt2"));
    rewriteArchive(input, {}, path("out.pt2"));
  }
  EXPECT_EQ(readBytes(path("out.pt2")), readBytes(path("in.pt2")));
}

TEST_F(ArchiveTest, RewriteCopiesAnInconsistentIdAsIs) {
  Entries entries = torchLikeEntries();
  entries.back().second = "written by some other tool";
  writeArchive(path("in.pt2"), entries);
  ArchiveReader input(path("in.pt2"));
  rewriteArchive(input, {{"byteorder", "big"}}, path("out.pt2"));
  ArchiveReader output(path("out.pt2"));
  EXPECT_EQ(output.data(*output.find(kSerializationIdPath)), "written by some other tool");
  EXPECT_EQ(output.data(*output.find("byteorder")), "big");
}

TEST_F(ArchiveTest, RewriteWorksWithoutAnId) {
  Entries entries = torchLikeEntries();
  entries.pop_back();
  writeArchive(path("in.pt2"), entries);
  ArchiveReader input(path("in.pt2"));
  rewriteArchive(input, {{"byteorder", "big"}}, path("out.pt2"));
  ArchiveReader output(path("out.pt2"));
  EXPECT_EQ(output.find(kSerializationIdPath), nullptr);
  EXPECT_EQ(output.records().size(), entries.size());
}

TEST_F(ArchiveTest, RewriteInPlaceKeepsModeAndLeavesNoTemporaryFile) {
  writeArchive(path("m.pt2"), torchLikeEntries());
  ASSERT_EQ(::chmod(path("m.pt2").c_str(), 0640), 0);
  ArchiveReader input(path("m.pt2"));
  rewriteArchive(input, {{"models/model.json", "{}"}}, path("m.pt2"));
  // The old map stays readable after the file is replaced.
  EXPECT_EQ(input.data(*input.find("models/model.json")), "{\"graph_module\": {}}");
  ArchiveReader output(path("m.pt2"));
  EXPECT_EQ(output.data(*output.find("models/model.json")), "{}");
  struct stat info {};
  ASSERT_EQ(::stat(path("m.pt2").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0640u);
  EXPECT_EQ(directoryListing(), std::vector<std::string>{"m.pt2"});
}

TEST_F(ArchiveTest, RewriteThroughASymlinkReplacesItsTarget) {
  writeArchive(path("m.pt2"), torchLikeEntries());
  fs::create_symlink("m.pt2", path("link.pt2"));
  ArchiveReader input(path("link.pt2"));
  rewriteArchive(input, {{"byteorder", "big"}}, path("link.pt2"));
  EXPECT_TRUE(fs::is_symlink(path("link.pt2")));
  ArchiveReader output(path("m.pt2"));
  EXPECT_EQ(output.data(*output.find("byteorder")), "big");
}

TEST_F(ArchiveTest, FailedRewriteLeavesNothingBehind) {
  writeArchive(path("m.pt2"), torchLikeEntries());
  const std::string before = readBytes(path("m.pt2"));
  ArchiveReader input(path("m.pt2"));
  try {
    rewriteArchive(input, {{"no/such/record", ""}}, path("m.pt2"));
    ADD_FAILURE() << "replacing a missing record succeeded";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kBadArchive);
    EXPECT_NE(std::string(error.what()).find("no/such/record"), std::string::npos);
  }
  try {
    rewriteArchive(input, {}, path("missing-dir/out.pt2"));
    ADD_FAILURE() << "writing into a missing directory succeeded";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kIo);
  }
  EXPECT_EQ(readBytes(path("m.pt2")), before);
  EXPECT_EQ(directoryListing(), std::vector<std::string>{"m.pt2"});
}

TEST_F(ArchiveTest, ReportsIoErrors) {
  for (const fs::path& file : {path("missing.pt2"), dir_}) {
    try {
      ArchiveReader reader(file);
      ADD_FAILURE() << "opened " << file;
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), ErrorKind::kIo);
      EXPECT_EQ(std::string(error.what()).rfind(file.string() + ": ", 0), 0u) << error.what();
    }
  }
  EXPECT_THROW({ ArchiveWriter writer(path("missing-dir/m.pt2")); }, Error);
}

TEST_F(ArchiveTest, RefusesEmptyFilesAndNonZips) {
  expectBad("", "empty file");
  expectBad("PK", "not a zip archive");
  expectBad(std::string(5000, 'x'), "not a zip archive");
}

TEST_F(ArchiveTest, RefusesEveryTruncation) {
  const std::string bytes = torchLikeBytes();
  for (std::size_t size = 1; size < bytes.size(); ++size) {
    SCOPED_TRACE(size);
    expectBad(bytes.substr(0, size), size >= 4 ? "truncated" : "not a zip");
  }
}

TEST_F(ArchiveTest, SurvivesEveryCorruptedByte) {
  const std::string bytes = torchLikeBytes();
  for (std::size_t at = 0; at < bytes.size(); ++at) {
    std::string corrupt = bytes;
    corrupt[at] = static_cast<char>(corrupt[at] ^ 0xFF);
    writeBytes(path("corrupt.pt2"), corrupt);
    try {
      ArchiveReader reader(path("corrupt.pt2"));
      for (const Record& record : reader.records()) {
        ASSERT_LE(record.data_offset + record.size, corrupt.size());
      }
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), ErrorKind::kBadArchive) << at << ": " << error.what();
    }
  }
}

TEST_F(ArchiveTest, RefusesCompressedAndEncryptedRecords) {
  const std::string bytes = torchLikeBytes();
  std::string compressed = bytes;
  const std::size_t central = centralHeaderOf(bytes, "arc/models/model.json");
  store16(compressed, central + 10, 8);
  expectBad(compressed,
            "record arc/models/model.json is compressed (method 8); "
            "only stored records are supported");
  std::string encrypted = bytes;
  store16(encrypted, central + 8, zip::kFlagEncrypted);
  expectBad(encrypted, "record arc/models/model.json is encrypted");
}

TEST_F(ArchiveTest, RefusesInconsistentHeaders) {
  const std::string bytes = torchLikeBytes();
  const std::size_t central = centralHeaderOf(bytes, "arc/models/model.json");
  const std::uint32_t local = zip::loadLE<std::uint32_t>(bytes.data() + central + 42);

  std::string renamed = bytes;
  renamed[local + zip::kLocalHeaderSize + 4] = 'X';
  expectBad(renamed, "local header name does not match the central directory");

  std::string method = bytes;
  store16(method, local + 8, 8);
  expectBad(method, "local header method 8 differs");

  std::string too_long = bytes;
  store32(too_long, central + 20, 0x7FFFFFF0);
  store32(too_long, central + 24, 0x7FFFFFF0);
  expectBad(too_long, "runs past the end");

  std::string sizes_differ = bytes;
  store32(sizes_differ, central + 20, 3);
  expectBad(sizes_differ, "differs from its size");

  std::string bad_local = bytes;
  store32(bad_local, central + 42, local + 1);
  expectBad(bad_local, "no local header at offset");

  const std::size_t eocd = bytes.size() - zip::kEndOfCentralDirSize;
  std::string directory_past_end = bytes;
  store32(directory_past_end, eocd + 16, static_cast<std::uint32_t>(bytes.size()));
  expectBad(directory_past_end, "central directory");

  std::string too_many = bytes;
  store16(too_many, eocd + 8, 0xFFF0);
  store16(too_many, eocd + 10, 0xFFF0);
  expectBad(too_many, "central directory declares 65520 records");
}

TEST_F(ArchiveTest, RefusesOverlappingRecords) {
  const std::string bytes = torchLikeBytes();
  // A record whose data runs into the next record's local header (its CRC-32 is not
  // checked: it is a weight).
  const std::size_t weight = centralHeaderOf(bytes, "arc/data/weights/weight_0");
  std::string runs_on = bytes;
  store32(runs_on, weight + 20, 16 + 200);
  store32(runs_on, weight + 24, 16 + 200);
  expectBad(runs_on, "record arc/data/weights/weight_0 (offset 0 to ");
  expectBad(runs_on, ") overlaps record arc/data/weights/model_weights_config.json (offset ");

  // A record hidden inside another one's data: the bytes of "arc/outer" are the local
  // header and data of "arc/inner", and a central directory entry points at them.
  writeArchive(path("inner.pt2"), {{"arc/inner", "hidden"}});
  const std::string inner = readBytes(path("inner.pt2"));
  const std::string inner_record = inner.substr(0, centralHeaderOf(inner, "arc/inner"));
  writeArchive(path("outer.pt2"), {{"arc/.data/version", "6\n"}, {"arc/outer", inner_record}});
  std::string nested = readBytes(path("outer.pt2"));
  const std::size_t outer_central = centralHeaderOf(nested, "arc/outer");
  const std::uint32_t outer_local = zip::loadLE<std::uint32_t>(nested.data() + outer_central + 42);
  const std::size_t outer_data =
      outer_local + zip::kLocalHeaderSize + 9 + load16(nested, outer_local + 28);
  std::string entry = nested.substr(outer_central, zip::kCentralHeaderSize);
  store32(entry, 16, zip::crc32Of("hidden"));
  store32(entry, 20, 6);
  store32(entry, 24, 6);
  store16(entry, 28, 9);  // name length
  store16(entry, 30, 0);  // extra fields length
  store32(entry, 42, static_cast<std::uint32_t>(outer_data));
  entry += "arc/inner";
  const std::size_t eocd = nested.size() - zip::kEndOfCentralDirSize;
  const std::uint32_t directory_size = zip::loadLE<std::uint32_t>(nested.data() + eocd + 12);
  nested.insert(eocd, entry);
  const std::size_t moved_eocd = eocd + entry.size();
  store16(nested, moved_eocd + 8, 3);
  store16(nested, moved_eocd + 10, 3);
  store32(nested, moved_eocd + 12, directory_size + static_cast<std::uint32_t>(entry.size()));
  expectBad(nested, "record arc/outer (offset ");
  expectBad(nested, ") overlaps record arc/inner (offset " + std::to_string(outer_data) + ")");
}

TEST_F(ArchiveTest, RefusesBadNamesAndLayouts) {
  const auto check = [this](const Entries& entries, const std::string& expected) {
    writeArchive(path("bad.pt2"), entries);
    expectBadFile(path("bad.pt2"), expected);
  };
  const std::pair<std::string, std::string> version{"arc/.data/version", "6\n"};
  check({version, {"arc/a", "1"}, {"arc/a", "2"}}, "record arc/a appears more than once");
  check({version, {"arc/../evil", ""}}, "record arc/../evil has a '..' path component");
  check({version, {"arc/x/../../evil", ""}}, "'..' path component");
  check({version, {"/arc/evil", ""}}, "record /arc/evil has an absolute path");
  check({version, {"arc//x", ""}}, "has an empty path component");
  check({version, {"arc/a\nb", ""}, {"arc/a\nb", ""}}, "record arc/a\\x0ab appears");
  check({{"arc/models/model.json", "{}"}}, "no .data/version record");
  check({version, {"other/models/model.json", "{}"}},
        "records are not all under one top-level folder (found arc/ and other/)");
  check({version, {"archive_format", "pt2"}}, "record archive_format is not inside a top-level");
  check({version, {"arc/dir/", "data"}}, "directory entry arc/dir/ has data");
  check({{"arc/", ""}}, "the archive has no records");
}

TEST(ZipFormat, Crc32Chains) {
  const std::string data = noise(100000, 7);
  const std::uint32_t whole = zip::crc32Of(data);
  for (std::size_t split : {std::size_t{0}, std::size_t{1}, std::size_t{4096}, data.size()}) {
    const std::string_view view(data);
    EXPECT_EQ(zip::crc32Update(zip::crc32Of(view.substr(0, split)), view.substr(split)), whole);
  }
  // An empty piece with no data at all (a default view) changes nothing.
  EXPECT_EQ(zip::crc32Update(whole, std::string_view()), whole);
}

class FileCopyTest : public ArchiveTest {
 protected:
  // An input of a few MiB and an output that already holds a few bytes, so offsets on both
  // sides are unaligned.
  void SetUp() override {
    ArchiveTest::SetUp();
    input_ = noise(3 * io::kCopyBlockSize + 12345, 11);
    writeBytes(path("in"), input_);
    in_fd_ = ::open(path("in").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(in_fd_, 0);
  }
  void TearDown() override {
    ::close(in_fd_);
    ArchiveTest::TearDown();
  }

  // Copies input_[offset, offset + size) after "head" into a new file; returns its bytes.
  std::string copyToFile(std::uint64_t offset, std::uint64_t size, io::CopyMethod method) {
    const int out = ::open(path("out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    EXPECT_GE(out, 0);
    io::writeAll(out, "head", 4, path("out"));
    io::copyRange(in_fd_, offset, out, size, path("in"), path("out"), method);
    EXPECT_EQ(::lseek(out, 0, SEEK_CUR), static_cast<off_t>(4 + size));
    ::close(out);
    return readBytes(path("out"));
  }

  std::string input_;
  int in_fd_ = -1;
};

TEST_F(FileCopyTest, CopiesRangesWithTheKernelAndByReading) {
  for (const io::CopyMethod method : {io::CopyMethod::kKernel, io::CopyMethod::kReadWrite}) {
    const std::vector<std::pair<std::size_t, std::size_t>> ranges = {
        {0, input_.size()},
        {1, input_.size() - 1},
        {4097, 2 * io::kCopyBlockSize + 1},
        {input_.size(), 0},
        {100, 1}};
    for (const auto& [offset, size] : ranges) {
      SCOPED_TRACE(std::to_string(offset) + "+" + std::to_string(size));
      EXPECT_EQ(copyToFile(offset, size, method), "head" + input_.substr(offset, size));
    }
  }
}

TEST_F(FileCopyTest, FallsBackToReadingWhenTheKernelCannotCopy) {
  // copy_file_range refuses pipes (EINVAL): the data must still all arrive, in order.
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  std::string received;
  std::thread drain([&] {
    char block[65536];
    for (ssize_t got; (got = ::read(pipe_fds[0], block, sizeof block)) > 0;) {
      received.append(block, static_cast<std::size_t>(got));
    }
  });
  try {
    io::copyRange(in_fd_, 7, pipe_fds[1], input_.size() - 7, path("in"), "pipe");
  } catch (...) {
    ::close(pipe_fds[1]);
    drain.join();
    throw;
  }
  ::close(pipe_fds[1]);
  drain.join();
  ::close(pipe_fds[0]);
  EXPECT_EQ(received, input_.substr(7));
}

TEST_F(FileCopyTest, ReportsAnInputThatEndsEarly) {
  for (const io::CopyMethod method : {io::CopyMethod::kKernel, io::CopyMethod::kReadWrite}) {
    try {
      copyToFile(input_.size() - 10, 11, method);
      ADD_FAILURE() << "copying past the end succeeded";
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), ErrorKind::kIo);
      EXPECT_NE(std::string(error.what()).find("ended early"), std::string::npos) << error.what();
    }
  }
}

// A program's unchanged stretches lie in the mapped input: long ones are copied from the
// input's file by the kernel, the rest written from memory, all in order and all seen by
// the caller's CRC; and written from the map when the kernel copy is not used.
TEST_F(FileCopyTest, WritesChunksOfAMappedFileByCopyingThem) {
  const std::string_view map(input_);  // stands in for the map: a file with these bytes
  const std::string own = "{\"changed\": true}";
  std::vector<std::string_view> chunks;
  std::string expected;
  for (std::size_t at = 1, n = 0; at + 70000 < map.size(); ++n) {
    // Long and short stretches of the input, unaligned, with text of the caller's between.
    const std::size_t size = n % 3 == 0 ? 10 : io::kMinKernelCopy + n * 977;
    chunks.push_back(map.substr(at, size));
    chunks.push_back(own);
    expected.append(map.substr(at, size)).append(own);
    at += size + 1 + n % 7;
  }
  for (const io::CopyMethod method : {io::CopyMethod::kKernel, io::CopyMethod::kReadWrite}) {
    const int out = ::open(path("out").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(out, 0);
    io::writeAll(out, "head", 4, path("out"));
    const std::filesystem::path in_path = path("in");
    const io::MappedFile source{in_fd_, map, &in_path, method};
    std::string seen;
    io::writeChunks(
        out, chunks, path("out"),
        [&](std::span<const std::string_view> batch) {
          for (std::string_view chunk : batch) seen.append(chunk);
        },
        &source);
    EXPECT_EQ(::lseek(out, 0, SEEK_CUR), static_cast<off_t>(4 + expected.size()));
    ::close(out);
    EXPECT_TRUE(readBytes(path("out")) == "head" + expected);
    EXPECT_TRUE(seen == expected);
  }
}

// What Model::save does: a replacement whose chunks are views into the input archive.
TEST_F(ArchiveTest, RewritesReplacementsMadeOfTheInputsOwnBytes) {
  const Entries entries = torchLikeEntriesWithWeights();
  writeArchive(path("in.pt2"), entries);
  ArchiveReader input(path("in.pt2"));
  const std::string_view weights = input.data(*input.find("data/weights/weight_2"));
  ASSERT_GT(weights.size(), std::size_t{2} << 20);
  const std::vector<std::string_view> chunks = {weights.substr(3, 1 << 20), "|",
                                                weights.substr(5, 100), "|",
                                                weights.substr(1000, (1 << 20) + 5)};
  std::string expected;
  for (std::string_view chunk : chunks) expected.append(chunk);
  rewriteArchive(input, {{"models/model.json", chunks}}, path("out.pt2"));
  ArchiveReader output(path("out.pt2"));
  const Record& record = *output.find("models/model.json");
  EXPECT_TRUE(output.data(record) == expected);
  EXPECT_EQ(record.crc32, zip::crc32Of(expected));
  EXPECT_EQ(output.checkedData(record), output.data(record));
  EXPECT_TRUE(pythonZipfileAccepts(path("out.pt2")));
}

TEST_F(ArchiveTest, WritesChunkedRecordsAsTheirConcatenation) {
  const std::string big = noise(3 << 20, 5);  // larger than the writer's buffer
  const std::vector<std::string_view> chunks = {"{\"a\": ", "", big, "}"};
  const std::string joined = std::string(chunks[0]) + big + "}";
  ArchiveWriter writer(path("m.pt2"));
  writer.add("r/.data/version", "6\n");
  writer.add("r/joined", chunks);
  writer.add("r/none", std::span<const std::string_view>());
  writer.finish();
  ArchiveReader reader(path("m.pt2"));
  EXPECT_EQ(reader.data(*reader.find("joined")), joined);
  EXPECT_EQ(reader.find("joined")->crc32, zip::crc32Of(joined));
  EXPECT_EQ(reader.data(*reader.find("none")), "");
  EXPECT_EQ(reader.find("joined")->data_offset % kDataAlignment, 0u);
  EXPECT_TRUE(pythonZipfileAccepts(path("m.pt2")));
}

// A serialized program: a large record of very many small pieces, written with writev in
// batches (more pieces than one call takes, more bytes than one batch), its CRC set after.
TEST_F(ArchiveTest, WritesRecordsOfManyPiecesInBatches) {
  const std::string text = noise(6 << 20, 9);
  std::vector<std::string_view> chunks;
  for (std::size_t at = 0, n = 0; at < text.size(); ++n) {
    const std::size_t size = std::min<std::size_t>(text.size() - at, 1 + (n * 37) % 700);
    chunks.push_back(std::string_view(text).substr(at, size));
    if (n % 5 == 0) chunks.push_back({});
    at += size;
  }
  ASSERT_GT(chunks.size(), 4u * 1024);
  ArchiveWriter writer(path("m.pt2"));
  writer.add("r/.data/version", "6\n");
  writer.add("r/models/model.json", chunks);
  writer.add("r/after", "the record after it");
  writer.finish();
  ArchiveReader reader(path("m.pt2"));
  EXPECT_EQ(reader.data(*reader.find("models/model.json")), text);
  EXPECT_EQ(reader.find("models/model.json")->crc32, zip::crc32Of(text));
  EXPECT_EQ(reader.data(*reader.find("after")), "the record after it");
  EXPECT_TRUE(pythonZipfileAccepts(path("m.pt2")));
}

TEST_F(ArchiveTest, CopiesRecordsFromAnotherArchive) {
  const Entries entries = torchLikeEntriesWithWeights();
  writeArchive(path("in.pt2"), entries);
  ArchiveReader input(path("in.pt2"));
  {
    ArchiveWriter writer(path("out.pt2"));
    writer.add("arc/first", "shifts every later record");
    for (const Record& record : input.records()) writer.copy(input, record);
    writer.finish();
  }
  ArchiveReader output(path("out.pt2"));
  ASSERT_EQ(output.records().size(), entries.size() + 1);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Record& record = output.records()[i + 1];
    EXPECT_EQ(record.name, entries[i].first);
    EXPECT_EQ(output.data(record), entries[i].second) << record.name;
    EXPECT_EQ(record.crc32, zip::crc32Of(entries[i].second)) << record.name;
    EXPECT_EQ(record.data_offset % kDataAlignment, 0u) << record.name;
  }
  EXPECT_TRUE(pythonZipfileAccepts(path("out.pt2")));
}

TEST_F(ArchiveTest, ChunkedReplacementsAreConcatenated) {
  writeArchive(path("in.pt2"), torchLikeEntriesWithWeights());
  ArchiveReader input(path("in.pt2"));
  const std::string middle = noise(200000, 9);
  rewriteArchive(input, {{"models/model.json", std::vector<std::string_view>{"[", middle, "]"}}},
                 path("out.pt2"));
  ArchiveReader output(path("out.pt2"));
  const Record& record = *output.find("models/model.json");
  EXPECT_EQ(output.data(record), "[" + middle + "]");
  EXPECT_EQ(record.crc32, zip::crc32Of("[" + middle + "]"));
  EXPECT_EQ(output.checkedData(record), output.data(record));
}

// Everything before models/model.json, the first record that changes, comes out as it
// was; the records from there on are rewritten, the id recomputed.
TEST_F(ArchiveTest, RewriteKeepsTheBytesBeforeTheFirstChangedRecord) {
  const Entries entries = torchLikeEntriesWithWeights();
  writeArchive(path("in.pt2"), entries);
  const std::string before = readBytes(path("in.pt2"));
  ArchiveReader input(path("in.pt2"));
  const std::string json = "{\"changed\": true, \"longer than before\": 1}";
  rewriteArchive(input, {{"models/model.json", json}}, path("out.pt2"));

  const std::string after = readBytes(path("out.pt2"));
  const std::uint64_t prefix = input.find("models/model.json")->local_header_offset;
  ASSERT_GT(prefix, 2u << 20);
  EXPECT_TRUE(after.compare(0, prefix, before, 0, prefix) == 0);
  ArchiveReader output(path("out.pt2"));
  Entries expected = entries;
  expected[4].second = json;
  expected.back().second = idFor(expected, "arc");
  ASSERT_EQ(output.records().size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const Record& record = output.records()[i];
    EXPECT_EQ(record.name, expected[i].first);
    EXPECT_EQ(output.data(record), expected[i].second) << record.name;
    EXPECT_EQ(record.crc32, zip::crc32Of(expected[i].second)) << record.name;
    EXPECT_EQ(record.data_offset % kDataAlignment, 0u) << record.name;
    if (i < 4) {  // kept: same place, same central directory entry
      EXPECT_EQ(record.local_header_offset, input.records()[i].local_header_offset);
      EXPECT_EQ(record.central_entry, input.records()[i].central_entry);
    }
  }
  EXPECT_TRUE(pythonZipfileAccepts(path("out.pt2")));
}

// The id is the first record in file order here, so it is where the copy must stop.
TEST_F(ArchiveTest, RewriteStopsTheCopyAtAnIdThatChanges) {
  Entries entries = torchLikeEntriesWithWeights();
  std::rotate(entries.begin(), entries.end() - 1, entries.end());
  entries.front().second = idFor(entries, "arc");
  writeArchive(path("in.pt2"), entries);
  ArchiveReader input(path("in.pt2"));
  rewriteArchive(input, {{"byteorder", "big"}}, path("out.pt2"));
  ArchiveReader output(path("out.pt2"));
  Entries expected = entries;
  expected.back().second = "big";
  expected.front().second = idFor(expected, "arc");
  EXPECT_NE(expected.front().second, entries.front().second);
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(output.data(output.records()[i]), expected[i].second) << expected[i].first;
  }
}

// Central directory order differs from file order: no prefix can be kept, so every
// record is rewritten, in directory order.
TEST_F(ArchiveTest, RewritesArchivesOutOfDirectoryOrderWhole) {
  const Entries entries = torchLikeEntriesWithWeights();
  writeArchive(path("in.pt2"), entries);
  std::string bytes = readBytes(path("in.pt2"));
  const std::size_t directory = centralHeaderOf(bytes, entries.front().first);
  std::vector<std::string> central;
  {
    ArchiveReader reader(path("in.pt2"));
    for (const Record& record : reader.records()) central.emplace_back(record.central_entry);
  }
  std::swap(central[0], central[2]);  // weight_2 first, then weight_1, weight_0
  std::string reordered;
  for (const std::string& entry : central) reordered += entry;
  bytes.replace(directory, reordered.size(), reordered);
  writeBytes(path("in.pt2"), bytes);

  ArchiveReader input(path("in.pt2"));
  EXPECT_EQ(input.records()[0].name, "arc/data/weights/weight_2");
  {
    ArchiveWriter writer(path("unused.pt2"));
    EXPECT_FALSE(writer.copyLeadingRecords(input, 3));
  }
  rewriteArchive(input, {{"models/model.json", "{}"}}, path("out.pt2"));
  ArchiveReader output(path("out.pt2"));
  ASSERT_EQ(output.records().size(), entries.size());
  std::uint64_t previous = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Record& record = output.records()[i];
    EXPECT_EQ(record.name, input.records()[i].name);
    const std::string expected =
        record.name == "arc/models/model.json" ? "{}" : std::string(input.data(input.records()[i]));
    if (record.name != "arc/.data/serialization_id") {
      EXPECT_EQ(output.data(record), expected) << record.name;
    }
    EXPECT_TRUE(i == 0 || record.local_header_offset > previous) << record.name;
    previous = record.local_header_offset;
  }
  EXPECT_TRUE(pythonZipfileAccepts(path("out.pt2")));
}

TEST_F(ArchiveTest, CopiesLeadingRecordsOnlyAtTheStart) {
  writeArchive(path("in.pt2"), torchLikeEntries());
  ArchiveReader input(path("in.pt2"));
  ArchiveWriter writer(path("out.pt2"));
  EXPECT_FALSE(writer.copyLeadingRecords(input, input.records().size()));
  writer.add("arc/.data/version", "6\n");
  EXPECT_FALSE(writer.copyLeadingRecords(input, 1));
}

TEST_F(ArchiveTest, RewriteWritesTheSameBytesWithOrWithoutSync) {
  writeArchive(path("in.pt2"), torchLikeEntriesWithWeights());
  ArchiveReader input(path("in.pt2"));
  const std::vector<Replacement> replacements = {{"models/model.json", "{\"x\": 1}"}};
  rewriteArchive(input, replacements, path("synced.pt2"), {.sync = true});
  rewriteArchive(input, replacements, path("unsynced.pt2"), {.sync = false});
  rewriteArchive(input, replacements, path("default.pt2"));
  EXPECT_EQ(readBytes(path("synced.pt2")), readBytes(path("unsynced.pt2")));
  EXPECT_EQ(readBytes(path("synced.pt2")), readBytes(path("default.pt2")));
}

// Records whose headers carry zip64 extra fields although nothing needs them (as streaming
// zip writers do): the copied prefix keeps them, header and central entry alike.
TEST_F(ArchiveTest, RewriteKeepsZip64ExtraFieldsOfCopiedRecords) {
  const Entries entries = {{"arc/data/weights/weight_0", noise(100000, 3)},
                           {"arc/.data/version", "6\n"},
                           {"arc/models/model.json", "{}"},
                           {"arc/byteorder", "little"}};
  std::string bytes;
  std::string directory;
  for (const auto& [name, data] : entries) {
    const auto offset = static_cast<std::uint64_t>(bytes.size());
    const std::uint32_t crc = zip::crc32Of(data);
    const auto common = [&](std::string& out) {
      zip::appendLE<std::uint16_t>(out, 0);  // flags
      zip::appendLE<std::uint16_t>(out, zip::kMethodStored);
      zip::appendLE<std::uint32_t>(out, 0);  // time, date
      zip::appendLE<std::uint32_t>(out, crc);
      zip::appendLE<std::uint32_t>(out, zip::kMax32);
      zip::appendLE<std::uint32_t>(out, zip::kMax32);
      zip::appendLE<std::uint16_t>(out, static_cast<std::uint16_t>(name.size()));
    };
    zip::appendLE<std::uint32_t>(bytes, zip::kLocalHeaderSignature);
    zip::appendLE<std::uint16_t>(bytes, zip::kVersionNeededZip64);
    common(bytes);
    zip::appendLE<std::uint16_t>(bytes, 20);
    bytes += name;
    zip::appendLE<std::uint16_t>(bytes, zip::kZip64ExtraId);
    zip::appendLE<std::uint16_t>(bytes, 16);
    zip::appendLE<std::uint64_t>(bytes, data.size());
    zip::appendLE<std::uint64_t>(bytes, data.size());
    bytes += data;

    zip::appendLE<std::uint32_t>(directory, zip::kCentralHeaderSignature);
    zip::appendLE<std::uint16_t>(directory, zip::kVersionNeededZip64);
    zip::appendLE<std::uint16_t>(directory, zip::kVersionNeededZip64);
    common(directory);
    zip::appendLE<std::uint16_t>(directory, 28);
    zip::appendLE<std::uint16_t>(directory, 0);  // comment
    zip::appendLE<std::uint16_t>(directory, 0);  // disk
    zip::appendLE<std::uint16_t>(directory, 0);  // internal attributes
    zip::appendLE<std::uint32_t>(directory, 0);  // external attributes
    zip::appendLE<std::uint32_t>(directory, zip::kMax32);
    directory += name;
    zip::appendLE<std::uint16_t>(directory, zip::kZip64ExtraId);
    zip::appendLE<std::uint16_t>(directory, 24);
    zip::appendLE<std::uint64_t>(directory, data.size());
    zip::appendLE<std::uint64_t>(directory, data.size());
    zip::appendLE<std::uint64_t>(directory, offset);
  }
  const auto directory_offset = static_cast<std::uint32_t>(bytes.size());
  bytes += directory;
  zip::appendLE<std::uint32_t>(bytes, zip::kEndOfCentralDirSignature);
  zip::appendLE<std::uint32_t>(bytes, 0);  // disks
  zip::appendLE<std::uint16_t>(bytes, static_cast<std::uint16_t>(entries.size()));
  zip::appendLE<std::uint16_t>(bytes, static_cast<std::uint16_t>(entries.size()));
  zip::appendLE<std::uint32_t>(bytes, static_cast<std::uint32_t>(directory.size()));
  zip::appendLE<std::uint32_t>(bytes, directory_offset);
  zip::appendLE<std::uint16_t>(bytes, 0);  // comment
  writeBytes(path("in.pt2"), bytes);
  ASSERT_TRUE(pythonZipfileAccepts(path("in.pt2")));

  ArchiveReader input(path("in.pt2"));
  rewriteArchive(input, {{"models/model.json", "{\"changed\": 1}"}}, path("out.pt2"));
  const std::string after = readBytes(path("out.pt2"));
  const std::uint64_t prefix = input.find("models/model.json")->local_header_offset;
  EXPECT_EQ(after.substr(0, prefix), bytes.substr(0, prefix));
  ArchiveReader output(path("out.pt2"));
  ASSERT_EQ(output.records().size(), entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Record& record = output.records()[i];
    EXPECT_EQ(output.data(record), i == 2 ? "{\"changed\": 1}" : entries[i].second);
    EXPECT_EQ(output.checkedData(record), output.data(record));
    if (i < 2) {
      EXPECT_EQ(record.central_entry, input.records()[i].central_entry);
    }
  }
  EXPECT_TRUE(pythonZipfileAccepts(path("out.pt2")));
}

// 65k records need the zip64 end records; a rewrite keeps them whether it copies almost
// every record as it is (last one replaced) or none (first one replaced).
TEST_F(ArchiveTest, RewritesArchivesWithZip64EndRecords) {
  constexpr std::size_t kCount = 0x10005;
  {
    ArchiveWriter writer(path("in.pt2"));
    writer.add("r/.data/version", "6\n");
    for (std::size_t i = 1; i < kCount; ++i) writer.add("r/" + std::to_string(i), "x");
    writer.finish({.sync = false});
  }
  ArchiveReader input(path("in.pt2"));
  const std::string last = std::to_string(kCount - 1);
  for (const std::string& replaced : {last, std::string(".data/version")}) {
    SCOPED_TRACE(replaced);
    rewriteArchive(input, {{replaced, "changed"}}, path("out.pt2"), {.sync = false});
    const std::string bytes = readBytes(path("out.pt2"));
    const std::size_t eocd = bytes.size() - zip::kEndOfCentralDirSize;
    EXPECT_EQ(load16(bytes, eocd + 10), zip::kMax16);
    EXPECT_EQ(zip::loadLE<std::uint32_t>(bytes.data() + eocd - zip::kZip64LocatorSize),
              zip::kZip64LocatorSignature);
    ArchiveReader output(path("out.pt2"));
    ASSERT_EQ(output.records().size(), kCount);
    EXPECT_EQ(output.data(*output.find(replaced)), "changed");
    EXPECT_EQ(output.data(*output.find("1")), "x");
    EXPECT_EQ(output.data(output.records()[kCount - 2]), "x");
    EXPECT_TRUE(pythonZipfileAccepts(path("out.pt2")));
  }
}

// Real archives written by torch.export.save, when the test data has some.
TEST_F(ArchiveTest, RewritesTorchArchivesFaithfully) {
  std::vector<fs::path> archives;
  const fs::path data_dir = EXMODE_TEST_DATA_DIR;
  if (fs::is_directory(data_dir)) {
    for (const auto& entry : fs::recursive_directory_iterator(data_dir)) {
      if (entry.is_regular_file() && entry.path().extension() == ".pt2") {
        archives.push_back(entry.path());
      }
    }
  }
  if (archives.empty()) GTEST_SKIP() << "no .pt2 files under " << data_dir;
  for (const fs::path& archive : archives) {
    SCOPED_TRACE(archive.string());
    ArchiveReader input(archive);
    ASSERT_NE(input.find(kDataVersionPath), nullptr);
    EXPECT_FALSE(input.programNames().empty());
    std::vector<std::string> names;
    std::vector<std::uint32_t> crcs;
    for (const Record& record : input.records()) {
      EXPECT_EQ(record.data_offset % kDataAlignment, 0u) << record.name;
      const std::string relative = record.name.substr(input.root().size() + 1);
      if (relative == kSerializationIdPath) continue;
      names.push_back(relative);
      crcs.push_back(record.crc32);
    }
    const Record* id = input.find(kSerializationIdPath);
    if (id) {
      EXPECT_EQ(input.data(*id), serializationId(names, crcs));
    }

    rewriteArchive(input, {}, path("copy.pt2"));
    ArchiveReader copy(path("copy.pt2"));
    EXPECT_EQ(copy.root(), input.root());
    ASSERT_EQ(copy.records().size(), input.records().size());
    for (std::size_t i = 0; i < input.records().size(); ++i) {
      const Record& original = input.records()[i];
      const Record& copied = copy.records()[i];
      EXPECT_EQ(copied.name, original.name);
      EXPECT_EQ(copied.crc32, original.crc32);
      EXPECT_EQ(copy.data(copied), input.data(original)) << original.name;
      EXPECT_EQ(copied.data_offset % kDataAlignment, 0u);
    }

    // A changed program: torch writes it after the weights, so the weights, their headers
    // and data descriptors come out identical.
    const std::string json = std::string(input.data(*input.find("models/model.json"))) + " ";
    rewriteArchive(input, {{"models/model.json", json}}, path("changed.pt2"), {.sync = false});
    const std::uint64_t prefix = input.find("models/model.json")->local_header_offset;
    EXPECT_GT(prefix, input.find("data/weights/model_weights_config.json")->local_header_offset);
    EXPECT_EQ(readBytes(path("changed.pt2")).substr(0, prefix),
              readBytes(archive).substr(0, prefix));
    ArchiveReader changed(path("changed.pt2"));
    ASSERT_EQ(changed.records().size(), input.records().size());
    std::vector<std::uint32_t> changed_crcs;  // in output order, as torch would fold them
    for (std::size_t i = 0; i < input.records().size(); ++i) {
      const Record& record = changed.records()[i];
      EXPECT_EQ(changed.checkedData(record).size(),
                record.name.ends_with("models/model.json") ? json.size() : input.records()[i].size);
      if (!id || record.name != id->name) changed_crcs.push_back(record.crc32);
    }
    if (id) {
      EXPECT_EQ(changed.data(*changed.find(kSerializationIdPath)),
                serializationId(names, changed_crcs));
    }
    EXPECT_TRUE(pythonZipfileAccepts(path("changed.pt2")));
  }
}

}  // namespace
}  // namespace exmode::archive
