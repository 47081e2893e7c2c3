// Tests for inputs that trigger open findings; see open_findings.h. None are open.
#include "open_findings.h"

namespace exmode::fuzz {

bool triggersOpenFinding(std::string_view /*json*/) { return false; }

}  // namespace exmode::fuzz
