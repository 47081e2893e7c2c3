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

import fnmatch
import importlib
import inspect
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_LIST = REPO / "data" / "mode_dependent_modules.txt"
WHENS = ("to-train", "to-eval", "both", "drop-path")


def parse(path):
    """[(line number, type, when, library, reason)]; raises ValueError naming the line."""
    rules = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split(None, 3)
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 4:
            raise ValueError(f"{path}:{number}: too few fields: {line!r}")
        type_, when, library, reason = fields[0], fields[1], fields[2], fields[3].strip()
        if when not in WHENS:
            raise ValueError(f"{path}:{number}: {when!r} is not one of {', '.join(WHENS)}")
        rules.append((number, type_, when, library, reason))
    return rules


def import_library(library, cache={}):
    """The library's top-level module, or the reason it does not import."""
    if library not in cache:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[library] = (importlib.import_module(library), None)
        except Exception as error:  # noqa: BLE001 - any import failure means "not installed"
            cache[library] = (None, f"{type(error).__name__}: {error}")
    return cache[library]


def resolve(type_):
    """The class named by a qualified name: the longest importable module prefix, then
    attributes (a __qualname__ may hold dots for nested classes). Raises LookupError."""
    parts = type_.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                continue  # this prefix is not a module; try a shorter one
            raise LookupError(f"importing {module_name} failed: {error}") from error
        except Exception as error:  # noqa: BLE001
            raise LookupError(f"importing {module_name} failed: {type(error).__name__}: {error}")
        for attribute in parts[split:]:
            if not hasattr(obj, attribute):
                raise LookupError(f"{module_name} has no {'.'.join(parts[split:])}")
            obj = getattr(obj, attribute)
        return obj
    raise LookupError(f"no module of {type_} imports")


def check_rule(type_, torch):
    """None if the rule names a real nn.Module class under exactly that name, else why not."""
    if "*" in type_:
        module_name = type_.split("*", 1)[0].rpartition(".")[0]
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # noqa: BLE001
            return f"the module {module_name} of the pattern does not import: {error}"
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, torch.nn.Module) and fnmatch.fnmatchcase(
                f"{cls.__module__}.{cls.__qualname__}", type_
            ):
                return None
        return f"no nn.Module class of {module_name} matches the pattern"
    try:
        cls = resolve(type_)
    except LookupError as error:
        return str(error)
    if not inspect.isclass(cls):
        return f"{type_} is not a class"
    if not issubclass(cls, torch.nn.Module):
        return f"{type_} is not a torch.nn.Module"
    name = f"{cls.__module__}.{cls.__qualname__}"
    if name != type_:
        return f"nn_module_stack would name it {name}"
    return None


def main(argv):
    lists = [Path(a) for a in argv] or [DEFAULT_LIST]
    import torch

    failures, skipped, checked = [], {}, {}
    for path in lists:
        try:
            rules = parse(path)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for number, type_, _when, library, _reason in rules:
            root = type_.split(".", 1)[0]
            module, why = import_library(root)
            if module is None:
                skipped.setdefault(library, [0, why])[0] += 1
                continue
            problem = check_rule(type_, torch)
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
