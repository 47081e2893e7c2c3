// Real archives written by torch.export.save (tests/data, made by make_test_archives.py):
// every program parses, verifies and is written back unchanged; switches keep it valid.
#include <gtest/gtest.h>

#include <filesystem>

#include "exmode/archive.h"
#include "exmode/error.h"
#include "exmode/model.h"
#include "exmode/program.h"

namespace exmode {
namespace {

std::vector<std::filesystem::path> testArchives() {
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(EXMODE_TEST_DATA_DIR)) {
    if (entry.path().extension() == ".pt2") paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

TEST(RealArchives, ProgramsComeBackByteForByte) {
  const auto paths = testArchives();
  ASSERT_FALSE(paths.empty()) << "no .pt2 files in " << EXMODE_TEST_DATA_DIR;
  for (const auto& path : paths) {
    archive::ArchiveReader reader(path);
    for (const std::string& name : reader.programNames()) {
      const std::string_view json = reader.data(*reader.find(name));
      auto program = Program::parse(json, path.string());
      EXPECT_EQ(program->toJson(), json) << path << " " << name;
    }
  }
}

TEST(RealArchives, SwitchesKeepProgramsValidAndRoundTrip) {
  for (const auto& path : testArchives()) {
    auto model = Model::open(path);
    const std::string name = model->programNames().front();
    const std::string original = printGraph(model->program(name).graph());
    const ProgramMode mode = model->mode();
    if (mode != ProgramMode::kTrain && mode != ProgramMode::kEval) continue;
    const bool was_training = model->training();
    if (was_training)
      model->eval();
    else
      model->train();
    EXPECT_NE(model->training(), was_training) << path;
    // Written and read back, the switched program is the same graph.
    const std::string switched = printGraph(model->program(name).graph());
    auto reparsed = Program::parse(model->program(name).toJson(), path.string());
    EXPECT_EQ(printGraph(reparsed->graph()), switched) << path;
    if (was_training)
      model->train();
    else
      model->eval();
    EXPECT_EQ(printGraph(model->program(name).graph()), original) << path;
  }
}

// A model keeps each program's sites between switches (SwitchCache); switched back and forth
// it must write, at every step, what a program switched without them writes.
TEST(RealArchives, ToggledModelsMatchProgramsSwitchedAfresh) {
  for (const auto& path : testArchives()) {
    auto model = Model::open(path);
    const std::string name = model->programNames().front();
    archive::ArchiveReader reader(path);
    const archive::Record* record = reader.find("models/" + name + ".json");
    ASSERT_NE(record, nullptr) << path;
    auto fresh = Program::parse(reader.data(*record), path.string());
    int step = 0;
    for (Mode mode : {Mode::kEval, Mode::kTrain, Mode::kTrain, Mode::kEval, Mode::kTrain,
                      Mode::kEval, Mode::kEval, Mode::kTrain}) {
      ++step;
      const bool refused = [&] {
        try {
          switchMode(*fresh, mode);
          return false;
        } catch (const Error&) {
          return true;
        }
      }();
      if (refused) {
        EXPECT_THROW(mode == Mode::kEval ? model->eval() : model->train(), Error) << path;
        break;
      }
      const auto reports = mode == Mode::kEval ? model->eval() : model->train();
      ASSERT_EQ(model->program(name).toJson(), fresh->toJson()) << path << " step " << step;
    }
  }
}

}  // namespace
}  // namespace exmode
