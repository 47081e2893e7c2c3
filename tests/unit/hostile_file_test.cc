// Tests of inputs in hostile surroundings: files that are not regular files, and archives
// truncated by another process while they are mapped (mapped_file_guard.h).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>

#include "archive/mapped_file_guard.h"
#include "exmode/archive.h"
#include "exmode/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define EXMODE_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EXMODE_TEST_SANITIZED 1
#endif
#endif
#ifndef EXMODE_TEST_SANITIZED
#define EXMODE_TEST_SANITIZED 0
#endif

namespace exmode::archive {
namespace {

namespace fs = std::filesystem;

class HostileFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::path(::testing::TempDir()) / "exmode-hostile-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path path(const std::string& name) const { return dir_ / name; }

  // An archive with a record of `weight_size` bytes, so that its map spans many pages.
  fs::path writeArchive(std::size_t weight_size) const {
    const fs::path file = path("in.pt2");
    ArchiveWriter writer(file);
    writer.add("arc/data/weights/weight_0", std::string(weight_size, 'w'));
    writer.add("arc/models/model.json", "{}");
    writer.add("arc/.data/version", "6\n");
    writer.finish();
    return file;
  }

  static void expectNotRegular(const fs::path& file, const std::string& kind) {
    try {
      ArchiveReader reader(file);
      ADD_FAILURE() << "opened " << file;
    } catch (const Error& error) {
      const std::string message = error.what();
      EXPECT_EQ(error.kind(), ErrorKind::kIo) << message;
      EXPECT_EQ(message.rfind(file.string() + ": not a regular file (" + kind + ")", 0), 0u)
          << message;
    }
  }

  fs::path dir_;
};

TEST_F(HostileFileTest, RefusesAFifoWithoutWaitingForAWriter) {
  const fs::path fifo = path("model.pt2");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto opened = std::async(std::launch::async, [&] { expectNotRegular(fifo, "a FIFO"); });
  if (opened.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    // Blocked in open(): a writer releases it, so the test fails instead of hanging.
    const int writer = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
    opened.wait();
    if (writer >= 0) ::close(writer);
    FAIL() << "opening a FIFO blocked";
  }
  opened.get();
}

TEST_F(HostileFileTest, RefusesDevicesAndDirectories) {
  expectNotRegular("/dev/null", "a character device");
  expectNotRegular("/dev/zero", "a character device");
  expectNotRegular(dir_, "a directory");
}

TEST_F(HostileFileTest, ReadsARegularFileThroughASymlink) {
  const fs::path file = writeArchive(10);
  fs::create_symlink(file, path("link.pt2"));
  ArchiveReader reader(path("link.pt2"));
  EXPECT_EQ(reader.records().size(), 3u);
  EXPECT_EQ(::fcntl(reader.fd(), F_GETFL) & O_NONBLOCK, 0);
}

TEST(MappedFileGuard, FindsRegisteredMapsOnly) {
  static char bytes[100];
  static const char* const kName = "file.pt2";
  EXPECT_EQ(guard::mappedFileAt(bytes + 10), nullptr);
  ASSERT_TRUE(guard::registerMap(bytes, 50, kName));
  EXPECT_EQ(guard::mappedFileAt(bytes), kName);
  EXPECT_EQ(guard::mappedFileAt(bytes + 49), kName);
  EXPECT_EQ(guard::mappedFileAt(bytes + 50), nullptr);
  guard::unregisterMap(bytes);
  EXPECT_EQ(guard::mappedFileAt(bytes), nullptr);
}

TEST(MappedFileGuard, LeavesMapsUnguardedWhenTheTableIsFull) {
  static char bytes[guard::kMaxMaps + 1];
  std::size_t registered = 0;
  while (registered <= guard::kMaxMaps && guard::registerMap(bytes + registered, 1, "f")) {
    ++registered;
  }
  EXPECT_LE(registered, guard::kMaxMaps);
  for (std::size_t i = 0; i < registered; ++i) guard::unregisterMap(bytes + i);
  EXPECT_TRUE(guard::registerMap(bytes, 1, "f"));
  guard::unregisterMap(bytes);
}

// The child of a death test: maps `file`, registers a temporary file, truncates `file` and
// reads a page past its new end.
[[noreturn]] void readTruncatedArchive(const fs::path& file, const fs::path& temp) {
  ArchiveReader reader(file);
  std::ofstream(temp) << "partial output";
  guard::TemporaryFileGuard temp_guard(temp.c_str());
  if (::truncate(file.c_str(), 100) != 0) std::abort();
  const std::string_view bytes = reader.mapped();
  volatile char sink = bytes[bytes.size() - 1];
  (void)sink;
  std::abort();  // not reached: the read raises SIGBUS
}

TEST_F(HostileFileTest, ATruncatedMapEndsTheProcessWithAnIoError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const fs::path file = writeArchive(1 << 20);
  const fs::path temp = path(".out.pt2.exmode-test");
  EXPECT_EXIT(readTruncatedArchive(file, temp), ::testing::ExitedWithCode(guard::kExitStatus),
              "in.pt2: changed or truncated while being read");
  EXPECT_FALSE(fs::exists(temp)) << "the temporary file was left behind";
}

// Dies of a bus error in a map exmode does not know about.
[[noreturn]] void readTruncatedForeignMap(const fs::path& archive, const fs::path& file) {
  ArchiveReader reader(archive);  // installs the guard
  std::ofstream(file) << std::string(1 << 16, 'x');
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  void* map = ::mmap(nullptr, 1 << 16, PROT_READ, MAP_PRIVATE, fd, 0);
  if (fd < 0 || map == MAP_FAILED || ::truncate(file.c_str(), 0) != 0) std::abort();
  volatile char sink = static_cast<const char*>(map)[(1 << 16) - 1];
  (void)sink;
  std::abort();
}

TEST_F(HostileFileTest, ABusErrorElsewhereStillCrashes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const fs::path archive = writeArchive(10);
  // Without sanitizers the default action kills the process; with them, their own report
  // (the handler that was there before the guard's) ends it.
  const auto crashed = [](int status) {
    if (WIFSIGNALED(status)) return WTERMSIG(status) == SIGBUS;
    return EXMODE_TEST_SANITIZED && WIFEXITED(status) && WEXITSTATUS(status) != 0 &&
           WEXITSTATUS(status) != guard::kExitStatus;
  };
  EXPECT_EXIT(readTruncatedForeignMap(archive, path("other")), crashed,
              EXMODE_TEST_SANITIZED ? "AddressSanitizer" : "");
}

TEST_F(HostileFileTest, RewriteRefusesAnInputThatChangedWhileCopied) {
  const fs::path file = writeArchive(1 << 20);
  ArchiveReader reader(file);
  // Growing the file faults nothing and shortens no copy: only the final check sees it.
  std::ofstream(file, std::ios::app) << "more";
  try {
    rewriteArchive(reader, {}, path("out.pt2"));
    ADD_FAILURE() << "rewrite succeeded";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(error.what()).find("in.pt2: changed or truncated while being read"),
              std::string::npos)
        << error.what();
  }
  EXPECT_FALSE(fs::exists(path("out.pt2")));
  for (const auto& entry : fs::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().filename().string().find(".exmode-"), std::string::npos);
  }
}

}  // namespace
}  // namespace exmode::archive
