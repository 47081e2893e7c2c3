// libFuzzer target (inputs that trigger an open finding are skipped, see open_findings.h): the
// bytes as program JSON (see fuzz_targets.h, runProgram).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  exmode::fuzz::runProgram(std::string_view(reinterpret_cast<const char*>(data), size),
                           /*skip_open_findings=*/true);
  return 0;
}
