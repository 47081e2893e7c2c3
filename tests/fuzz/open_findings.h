// Findings the fuzz targets made that are not fixed yet, each with a cheap test of whether
// an input triggers it. The fuzz binaries skip such inputs so that a bounded run (CI) fails
// only on new findings; the inputs themselves are kept in tests/fuzz/open/<target>/, and
// the unit test FuzzReplay.OpenFindingsStillFail checks that each still fails. Once one is
// fixed, that test says so: move its input to tests/fuzz/regressions/<target>/ and delete
// its check here.
#pragma once

#include <string_view>

namespace exmode::fuzz {

// Program JSON some node object of which (graph_module.graph.nodes[i]) repeats a key, by a
// scan of its brackets, strings and names only. The fuzz targets ask it of their input and
// of what exmode wrote: on malformed input the reader's view can differ from this scan,
// but a node it read twice shows in what it writes.
//
// Open finding (src/program/program_reader.cc, readNode): the reader accepts a node that
// repeats a field, e.g. "outputs" twice, and appends both lists to the node, where torch
// (Python's json) keeps only the last. A switch then rewrites the node from its fields and
// writes the merged list once per occurrence, so `exmode eval` exits 0 having written a
// program that defines a value twice, which exmode itself then rejects (exit 4). The
// reader should reject repeated node fields (exit 4), as it does a repeated graph_module.
bool hasRepeatedNodeField(std::string_view json);

// Whether `json` (an input, or exmode's output) shows any open finding.
bool triggersOpenFinding(std::string_view json);

}  // namespace exmode::fuzz
