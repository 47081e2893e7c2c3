// Building and writing JSON text that carries value references (see RefText in program.h).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "exmode/program.h"

namespace exmode {

// Appends `payload` to `text`, moving its references along.
void appendShifted(std::string& text, Refs& refs, std::string_view payload,
                   const Refs& payload_refs);
// Appends an Argument union {"<kind>": <payload>}, moving its references along.
void appendUnion(std::string& text, Refs& refs, const Argument& arg);
// Appends `ref_text` with every reference replaced by its value's current name.
void appendResolved(std::string& out, const RefText& ref_text);

}  // namespace exmode
