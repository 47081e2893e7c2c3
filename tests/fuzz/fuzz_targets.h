// What the fuzz targets do with one input, shared by the libFuzzer binaries
// (fuzz_archive.cc, fuzz_program.cc) and the unit test that replays the seed corpora and
// every input that once made a target fail (tests/unit/fuzz_replay_test.cc).
//
// The only error a hostile input may cause is exmode::Error: the targets catch it where an
// input may be rejected. Anything else that escapes (std::logic_error from a broken
// invariant, any other exception) is a finding, and so are crashes, sanitizer reports,
// leaks and hangs. Where an earlier step accepted the input, later steps must accept what
// exmode itself produced: those checks throw FuzzFinding.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace exmode::fuzz {

// A broken promise found by a target's own checks (not an exmode::Error).
class FuzzFinding : public std::logic_error {
 public:
  explicit FuzzFinding(const std::string& what) : std::logic_error("fuzz finding: " + what) {}
};

// `data` as an archive file: ArchiveReader opens it; every record is read and its CRC-32
// checked; programNames(); for an accepted archive, rewriteArchive without and with a
// replacement (each output must read back with the same records), then Model::open, a
// switch to eval and train, save, and a re-open of what was saved.
// With `skip_open_findings`, inputs that trigger a finding not fixed yet
// (open_findings.h) are let through unchecked where they would trigger it.
void runArchive(std::string_view data, bool skip_open_findings = false);

// `data` as program JSON: Program::parse, verify, collectSites, switchMode to eval and to
// train (each on its own parse), toJson and a re-parse of each output, which must succeed;
// a re-parsed switched program must be in the target mode (or have no site) and switching
// it again must change nothing.
void runProgram(std::string_view data, bool skip_open_findings = false);

}  // namespace exmode::fuzz
