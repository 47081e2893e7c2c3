// The tool's one way of turning an exception into a line on stderr and an exit status.
#include <iostream>

#include "cli/commands.h"
#include "exmode/error.h"

namespace exmode::cli {

int reportingErrors(const std::function<int()>& body, const std::string& file) {
  try {
    return body();
  } catch (const Error& e) {
    std::cerr << "exmode: " << e.what() << "\n";  // the library's messages name the file
    return static_cast<int>(e.kind());
  } catch (const std::exception& e) {
    std::cerr << "exmode: " << (file.empty() ? "" : file + ": ") << "internal error: " << e.what()
              << "\n";
    return 1;
  }
}

}  // namespace exmode::cli
