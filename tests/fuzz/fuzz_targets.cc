// The fuzz targets' work on one input; see fuzz_targets.h.
#include "fuzz_targets.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "exmode/archive.h"
#include "exmode/error.h"
#include "exmode/model.h"
#include "exmode/passes.h"
#include "exmode/program.h"
#include "open_findings.h"

namespace exmode::fuzz {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void finding(const std::string& what) { throw FuzzFinding(what); }

// Runs `f`, which must not fail: exmode rejecting what it accepted or wrote a moment ago is
// a finding, not an expected error.
template <class F>
auto mustSucceed(const char* what, F f) {
  try {
    return f();
  } catch (const Error& e) {
    finding(std::string(what) + " failed: " + e.what());
  }
}

// ------------------------------------------------------------------ archives

// The input as a file that lives in memory only (memfd), opened by path like any archive.
class MemoryFile {
 public:
  explicit MemoryFile(std::string_view data) {
    fd_ = ::memfd_create("exmode-fuzz-input", MFD_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error(std::string("memfd_create: ") + std::strerror(errno));
    const char* p = data.data();
    std::size_t left = data.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        ::close(fd_);
        throw std::runtime_error(std::string("write: ") + std::strerror(errno));
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  ~MemoryFile() { ::close(fd_); }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;
  fs::path path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_ = -1;
};

// A fresh directory for outputs, removed with everything in it when done.
class ScratchDirectory {
 public:
  ScratchDirectory() {
    std::string name = (fs::temp_directory_path() / "exmode-fuzz-XXXXXX").string();
    if (::mkdtemp(name.data()) == nullptr) {
      throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
    }
    path_ = name;
  }
  ~ScratchDirectory() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;
  fs::path operator/(const char* leaf) const { return path_ / leaf; }
  std::size_t entries() const {
    std::size_t count = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(path_)) ++count;
    return count;
  }

 private:
  fs::path path_;
};

std::string relative(const archive::ArchiveReader& reader, const archive::Record& record) {
  return record.name.substr(reader.root().size() + 1);
}

// The id torch would store for `reader`'s records (all but the id itself, in order).
std::string idOf(const archive::ArchiveReader& reader) {
  std::vector<std::string> names;
  std::vector<std::uint32_t> crcs;
  for (const archive::Record& record : reader.records()) {
    const std::string name = relative(reader, record);
    if (name == archive::kSerializationIdPath) continue;
    names.push_back(name);
    crcs.push_back(record.crc32);
  }
  return archive::serializationId(names, crcs);
}

// `out` must hold `in`'s records in the same order with the same bytes and CRC-32s, except
// the record named `replaced` (which must hold `replacement`) and a serialization id that
// may be recomputed, which must then be the id of `out`'s records.
void expectSameRecords(const archive::ArchiveReader& in, const archive::ArchiveReader& out,
                       const std::string& replaced, std::string_view replacement) {
  if (in.root() != out.root()) finding("rewrite changed the root folder");
  if (in.records().size() != out.records().size()) finding("rewrite changed the record count");
  for (std::size_t i = 0; i < in.records().size(); ++i) {
    const archive::Record& a = in.records()[i];
    const archive::Record& b = out.records()[i];
    if (a.name != b.name) finding("rewrite changed record " + std::to_string(i) + "'s name");
    const std::string name = relative(in, a);
    if (name == replaced) {
      if (out.data(b) != replacement) finding("replaced record " + name + " has the wrong bytes");
      mustSucceed("CRC-32 check of a replaced record", [&] { out.checkCrc(b); });
      continue;
    }
    if (name == archive::kSerializationIdPath && in.data(a) != out.data(b)) {
      if (in.data(a) != idOf(in)) finding("rewrite recomputed an id that was not consistent");
      if (out.data(b) != idOf(out)) finding("rewrite wrote a serialization id that is wrong");
      mustSucceed("CRC-32 check of a recomputed id", [&] { out.checkCrc(b); });
      continue;
    }
    if (a.crc32 != b.crc32) finding("rewrite changed the CRC-32 of record " + name);
    if (a.size != b.size || in.data(a) != out.data(b)) {
      finding("rewrite changed the bytes of record " + name);
    }
  }
}

// Rewrites the archive (optionally replacing one record) into `scratch` and reads it back.
void checkRewrite(const archive::ArchiveReader& reader, const ScratchDirectory& scratch,
                  const std::optional<std::string>& replaced) {
  static constexpr std::string_view kChunks[] = {"{\"replaced\": ", "\"by the fuzz target\"}"};
  const std::string replacement = std::string(kChunks[0]) + std::string(kChunks[1]);
  std::vector<archive::Replacement> replacements;
  if (replaced) {
    replacements.emplace_back(
        *replaced, std::vector<std::string_view>(std::begin(kChunks), std::end(kChunks)));
  }
  const fs::path out = scratch / "rewritten.pt2";
  mustSucceed("rewriteArchive of an accepted archive",
              [&] { archive::rewriteArchive(reader, replacements, out, {.sync = false}); });
  if (scratch.entries() != 1) finding("rewriteArchive left a temporary file behind");
  const auto reread = mustSucceed("reading a rewritten archive",
                                  [&] { return std::make_unique<archive::ArchiveReader>(out); });
  expectSameRecords(reader, *reread, replaced.value_or(""), replacement);
}

// Opens the archive as a model, switches it to `target`, saves it and opens the result.
void checkSwitch(const fs::path& input, const ScratchDirectory& scratch, Mode target,
                 bool skip_open_findings) {
  std::unique_ptr<Model> model;
  try {
    model = Model::open(input);
    target == Mode::kEval ? model->eval() : model->train();
  } catch (const Error&) {
    return;
  }
  if (skip_open_findings) {
    for (const std::string& name : model->programNames()) {
      const std::string json = mustSucceed("toJson of a switched program",
                                           [&] { return model->program(name).toJson(); });
      if (triggersOpenFinding(json)) return;
    }
  }
  const fs::path out = scratch / "switched.pt2";
  mustSucceed("saving a switched model", [&] { model->save(out, {.sync = false}); });
  const auto reopened = mustSucceed("opening a saved model", [&] { return Model::open(out); });
  const ProgramMode mode =
      mustSucceed("the mode of a saved model", [&] { return reopened->mode(); });
  const ProgramMode wanted = target == Mode::kEval ? ProgramMode::kEval : ProgramMode::kTrain;
  if (mode != wanted && mode != ProgramMode::kNone) {
    finding("a model switched to " + std::string(modeName(target)) + " reads back in mode " +
            std::string(programModeName(mode)));
  }
}

// ------------------------------------------------------------------ programs

constexpr const char* kSourceName = "fuzz input";

void checkSwitchedProgram(std::string_view data, Mode target, bool skip_open_findings) {
  auto program = mustSucceed("parsing an accepted program again",
                             [&] { return Program::parse(data, kSourceName); });
  SwitchReport report;
  try {
    report = switchMode(*program, target);
  } catch (const Error&) {
    return;
  }
  const ProgramMode wanted = target == Mode::kEval ? ProgramMode::kEval : ProgramMode::kTrain;
  const std::string name(modeName(target));
  if (report.after != wanted && report.after != ProgramMode::kNone) {
    finding("switchMode to " + name + " reports mode " +
            std::string(programModeName(report.after)));
  }
  const std::string json =
      mustSucceed("toJson of a switched program", [&] { return program->toJson(); });
  // Switched away and back in memory twice, the program reuses what each switch away
  // erased (run under the sanitizers here); it must still be valid, read back in the
  // target mode and need no change to be there. (A malformed program need not come back
  // byte for byte: increments the switch cannot attribute to a site may move or go.)
  // A twin goes through the same switches keeping its sites between them (SwitchCache): it
  // must give the same program, or fail where the other fails.
  {
    auto toggled = mustSucceed("parsing an accepted program again",
                               [&] { return Program::parse(data, kSourceName); });
    auto twin = mustSucceed("parsing an accepted program again",
                            [&] { return Program::parse(data, kSourceName); });
    SwitchCache cache;
    // Switches both; false when the switch was refused (by both).
    auto switchBoth = [&](Mode mode) {
      bool refused = false;
      try {
        (void)switchMode(*toggled, mode);
      } catch (const Error&) {
        refused = true;
      }
      try {
        (void)switchMode(*twin, mode, "", &cache);
        if (refused) finding("a switch that keeps its sites accepted what a fresh one refused");
      } catch (const Error& e) {
        if (!refused) finding(std::string("a switch that keeps its sites failed: ") + e.what());
      }
      if (!refused &&
          mustSucceed("toJson of a switched program", [&] { return twin->toJson(); }) !=
              mustSucceed("toJson of a switched program", [&] { return toggled->toJson(); }))
        finding("a switch that keeps its sites wrote another program than a fresh one");
      return !refused;
    };
    if (!switchBoth(target)) finding("switching an accepted program again failed");
    const Mode other = target == Mode::kEval ? Mode::kTrain : Mode::kEval;
    for (int round = 0; round < 2; ++round) {
      if (!switchBoth(other)) break;  // may be refused (say, the functional IR)
      if (!switchBoth(target)) finding("switching back a program switched away failed");
    }
    const std::string toggled_json =
        mustSucceed("toJson after round trips", [&] { return toggled->toJson(); });
    auto back = mustSucceed("parsing a program switched back and forth",
                            [&] { return Program::parse(toggled_json, kSourceName); });
    const SwitchReport settled = mustSucceed("switching a program switched back and forth",
                                             [&] { return switchMode(*back, target); });
    if (!settled.changes.empty())
      finding("a program switched to " + name + " and back and forth is not in " + name);
  }
  // The repeated node field may only show in what was written (the reader's view of a
  // malformed input can differ from any simple scan of it).
  if (skip_open_findings && triggersOpenFinding(json)) return;
  if (program->serialize().join() != json) finding("serialize() and toJson() differ");
  auto reparsed =
      mustSucceed("parsing a switched program", [&] { return Program::parse(json, kSourceName); });
  const ProgramMode mode = mustSucceed("collecting the sites of a switched program",
                                       [&] { return detectMode(collectSites(*reparsed)); });
  if (mode != report.after) {
    finding("a program switched to " + name + " reads back in mode " +
            std::string(programModeName(mode)) + ", not " +
            std::string(programModeName(report.after)));
  }
  const SwitchReport again = mustSucceed("switching a switched program again",
                                         [&] { return switchMode(*reparsed, target); });
  if (!again.changes.empty())
    finding("switching to " + name + " twice changed something the second time");
  const std::string json_again =
      mustSucceed("toJson of a re-read program", [&] { return reparsed->toJson(); });
  if (json_again != json) finding("a program exmode wrote does not come back byte for byte");
}

}  // namespace

void runArchive(std::string_view data, bool skip_open_findings) {
  const MemoryFile file(data);
  std::unique_ptr<archive::ArchiveReader> reader;
  try {
    reader = std::make_unique<archive::ArchiveReader>(file.path());
  } catch (const Error&) {
    return;
  }
  std::optional<std::string> replaced;
  for (const archive::Record& record : reader->records()) {
    // Reads every byte of the record (inside the map, or it faults).
    try {
      reader->checkCrc(record);
    } catch (const Error&) {
    }
    const archive::Record* found = reader->find(relative(*reader, record));
    if (found != &record) finding("find() does not return record " + record.name);
  }
  for (const std::string& name : reader->programNames()) {
    if (!replaced) replaced = name;
    if (reader->find(name) == nullptr) finding("program record " + name + " not found");
  }
  if (!replaced) {
    for (const archive::Record& record : reader->records()) {
      if (relative(*reader, record) != archive::kSerializationIdPath) {
        replaced = relative(*reader, record);
        break;
      }
    }
  }
  const ScratchDirectory scratch;
  checkRewrite(*reader, scratch, std::nullopt);
  if (replaced) checkRewrite(*reader, scratch, replaced);
  if (skip_open_findings) {
    for (const std::string& name : reader->programNames()) {
      if (triggersOpenFinding(reader->data(*reader->find(name)))) return;
    }
  }
  checkSwitch(file.path(), scratch, Mode::kEval, skip_open_findings);
  checkSwitch(file.path(), scratch, Mode::kTrain, skip_open_findings);
}

void runProgram(std::string_view data, bool skip_open_findings) {
  if (skip_open_findings && triggersOpenFinding(data)) return;
  std::unique_ptr<Program> program;
  try {
    program = Program::parse(data, kSourceName);
  } catch (const Error&) {
    return;
  }
  mustSucceed("verify() after a successful parse", [&] { program->verify(); });
  try {
    (void)detectMode(collectSites(*program));
  } catch (const Error&) {
  }
  const std::string json =
      mustSucceed("toJson of an unchanged program", [&] { return program->toJson(); });
  auto reparsed = mustSucceed("parsing an unchanged program's output",
                              [&] { return Program::parse(json, kSourceName); });
  if (mustSucceed("toJson of a re-read program", [&] { return reparsed->toJson(); }) != json) {
    finding("an unchanged program exmode wrote does not come back byte for byte");
  }
  checkSwitchedProgram(data, Mode::kEval, skip_open_findings);
  checkSwitchedProgram(data, Mode::kTrain, skip_open_findings);
}

}  // namespace exmode::fuzz
