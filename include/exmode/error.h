// Errors a user can cause (bad files, bad arguments, failed writes). Each carries the
// kind, which fixes the command-line exit status, and a one-line message that names
// the file and what is wrong with it.
#pragma once

#include <stdexcept>
#include <string>

namespace exmode {

enum class ErrorKind {
  kUsage = 2,        // bad command line
  kBadArchive = 3,   // not a zip, truncated, missing records, unsupported layout
  kBadProgram = 4,   // program JSON malformed, unknown schema major, graph invariants broken
  kUnsupported = 5,  // a valid program exmode cannot switch safely
  kIo = 6,           // reading or writing failed at the OS level
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace exmode
