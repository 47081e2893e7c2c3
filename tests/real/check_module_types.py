#!/usr/bin/env python3
"""Checks data/mode_dependent_modules.txt against the installed libraries: every listed
module type must be a class that exists under exactly that qualified name
(`type(m).__module__ + "." + type(m).__qualname__`, as torch.export's nn_module_stack
writes it) and is a torch.nn.Module. A pattern with `*` must match at least one class of
its module.

A script, not a test module (pytest does not collect it): run it with the python of the
real-architecture venv, where torchvision, timm and transformers are installed:

    /work/venv-tv/bin/python tests/real/check_module_types.py [LIST ...]

LIST defaults to data/mode_dependent_modules.txt. Entries of a library that does not
import are reported as skipped. Exits 1 listing every entry that does not check out, 2 if
a list does not parse, 0 otherwise.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The format's parser and the class lookup are shared with tests/python/test_module_types_data.py.
sys.path.append(str(Path(__file__).resolve().parents[1] / "python"))

from module_types_format import DEFAULT_LIST, import_library, read_rules, type_problem  # noqa: E402


def main(argv):
    lists = [Path(a) for a in argv] or [DEFAULT_LIST]
    import torch

    failures, skipped, checked = [], {}, {}
    for path in lists:
        try:
            rules = read_rules(path)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for number, type_, _when, library, _reason in rules:
            root = type_.split(".", 1)[0]
            module, why = import_library(root)
            if module is None:
                skipped.setdefault(library, [0, why])[0] += 1
                continue
            problem = type_problem(type_, torch.nn.Module)
            checked[library] = checked.get(library, 0) + 1
            if problem is not None:
                failures.append(f"{path}:{number}: {type_}: {problem}")

    for library, count in sorted(checked.items()):
        version = getattr(sys.modules.get(library), "__version__", "")
        print(f"checked {count:4d} {library} {version}".rstrip())
    for library, (count, why) in sorted(skipped.items()):
        print(f"skipped {count:4d} {library} (does not import: {why})")
    if failures:
        print(f"{len(failures)} listed module type(s) do not exist as named:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    print("every listed module type of the installed libraries exists as named")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
