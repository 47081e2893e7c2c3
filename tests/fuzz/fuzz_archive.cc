// libFuzzer target (inputs that trigger an open finding are skipped, see open_findings.h): the
// bytes as a PT2 archive (see fuzz_targets.h, runArchive).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  exmode::fuzz::runArchive(std::string_view(reinterpret_cast<const char*>(data), size),
                           /*skip_open_findings=*/true);
  return 0;
}
