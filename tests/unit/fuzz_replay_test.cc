// Replays the fuzz targets' seed corpora and every input that once made a target fail
// (tests/fuzz/{corpus,regressions}/<target>/) through the targets' own code, so each
// finding stays fixed in every build, sanitized or not, with or without clang.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "exmode/error.h"
#include "fuzz_targets.h"
#include "open_findings.h"

namespace exmode {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> inputsOf(const std::string& target) {
  std::vector<fs::path> paths;
  for (const char* kind : {"corpus", "regressions"}) {
    const fs::path dir = fs::path(EXMODE_FUZZ_DIR) / kind / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_regular_file()) paths.push_back(entry.path());
    }
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <class Run>
void replay(const std::string& target, Run run) {
  const auto paths = inputsOf(target);
  ASSERT_FALSE(paths.empty()) << "no inputs under " << EXMODE_FUZZ_DIR << "/*/" << target;
  for (const fs::path& path : paths) {
    SCOPED_TRACE(path.string());
    // exmode::Error escaping means a step that must accept the input rejected it.
    try {
      run(readFile(path));
    } catch (const Error& e) {
      ADD_FAILURE() << "exmode::Error escaped: " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
  }
}

TEST(FuzzReplay, ArchiveTarget) {
  replay("archive", [](std::string_view data) { fuzz::runArchive(data); });
}

TEST(FuzzReplay, ProgramTarget) {
  replay("program", [](std::string_view data) { fuzz::runProgram(data); });
}

// Findings not fixed yet (open_findings.h): each input must still fail, unless the open
// findings are skipped as the fuzz binaries skip them. When one passes, it is fixed: move it
// to regressions/ and delete its check.
TEST(FuzzReplay, OpenFindingsStillFail) {
  for (const char* target : {"archive", "program"}) {
    const fs::path dir = fs::path(EXMODE_FUZZ_DIR) / "open" / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      SCOPED_TRACE(entry.path().string());
      const std::string data = readFile(entry.path());
      const auto run = [&](bool skip) {
        std::string_view(target) == "archive" ? fuzz::runArchive(data, skip)
                                              : fuzz::runProgram(data, skip);
      };
      EXPECT_NO_THROW(run(/*skip=*/true)) << "the fuzz binaries do not skip it";
      bool failed = false;
      try {
        run(/*skip=*/false);
      } catch (const std::exception&) {
        failed = true;
      }
      EXPECT_TRUE(failed) << "passes now: fixed? Move it to tests/fuzz/regressions/" << target
                          << "/ and delete its check in tests/fuzz/open_findings.cc";
    }
  }
}

}  // namespace
}  // namespace exmode
