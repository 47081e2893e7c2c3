// A batch norm's num_batches_tracked counter and its increments, shared by the forms of
// batch norm: the default IR's in-place add_(counter, 1) and the functional IR's
// add(counter, 1). Either way the increments of a module form a chain (each reads the one
// before), from the counter's placeholder, one link per call.
#pragma once

#include <absl/container/inlined_vector.h>

#include <string_view>
#include <utility>

#include "exmode/pattern.h"
#include "exmode/program.h"

namespace exmode::passes {

// The counters a site's increment may be on, most likely first: the buffer of the module
// that ran the site (nn_module_stack), then the one beside `running_mean`'s buffer (the
// site's running-mean placeholder). They differ when modules share buffers: torch reads
// shared running statistics through one placeholder while each module counts on its own,
// and reads a module registered under two names through the placeholders of the name it
// was called by last.
absl::InlinedVector<Value*, 2> counterCandidates(const Graph& graph, const Node& site,
                                                 const Value& running_mean);

// The increment (a match of `increment`: self a tensor, other the literal 1) that reads
// `value`, if any.
Node* incrementReading(const Value& value, const rewrite::Pattern& increment);

// The counter's latest value before `node`: follows the chain of increments.
Value* counterValueBefore(Value& counter, const Node& node, const rewrite::Pattern& increment);

// The increments belonging to `site`, in chain order: those on the counter's chain before
// the site and after `previous_site` (the module's previous site). torch writes exactly one;
// a malformed program may have more, and going to eval erases them all (torch's eval
// export has none), so that switching back and forth settles after one round trip.
using Increments = absl::InlinedVector<Node*, 1>;
Increments incrementsOf(Value& counter, const Node& site, const Node* previous_site,
                        const rewrite::Pattern& increment);

// Metadata for an inserted increment: the site's module stack and stack trace, as the
// site's own JSON text (a view: nothing is copied).
absl::InlinedVector<std::pair<std::string_view, RawJson>, 2> incrementMetadata(const Node& site);

}  // namespace exmode::passes
