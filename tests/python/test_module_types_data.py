"""The built-in list of mode-dependent module types (data/mode_dependent_modules.txt).

The file is data compiled into exmode; its format is specified in
include/exmode/findings.h:

    # comment
    <module type>  <when>  <library>  <reason, the rest of the line>

Checks the format (read by tests/python/module_types_format.py), then, for every library
that imports here, that each listed class exists under exactly the qualified name
nn_module_stack writes (`type(m).__module__ + "." + type(m).__qualname__`). Libraries
that do not import are skipped one by one; torch classes are always checked.
tests/real/check_module_types.py checks every library in the real-architecture venv.
"""

import fnmatch
import re
import warnings
from collections import Counter

import pytest
import torch

from module_types_format import DEFAULT_LIST as LIST
from module_types_format import WHENS, parse_rules, type_problem

# A dotted Python name; `*` stands for any run of characters.
TYPE_RE = re.compile(r"[A-Za-z_*][A-Za-z0-9_*]*(\.[A-Za-z_*][A-Za-z0-9_*]*)+")
LIBRARY_RE = re.compile(r"[A-Za-z0-9_.-]+")


RULES = parse_rules(LIST.read_text(encoding="utf-8"))
LIBRARIES = sorted({library for _, _, _, library, _ in RULES})


def test_parser_reads_the_format():
    text = (
        "# a comment\n"
        "\n"
        "   # an indented comment\n"
        "a.b.C   both\tlib   does x;  then y  \n"
        "a.*.D  drop-path  lib  holds a drop path\n"
    )
    assert parse_rules(text) == [
        (4, "a.b.C", "both", "lib", "does x;  then y"),
        (5, "a.*.D", "drop-path", "lib", "holds a drop path"),
    ]
    assert parse_rules("a.b.C  both  lib\n") == [(1, "a.b.C", "both", "lib", "")]


def test_list_has_rules_of_every_surveyed_library():
    counts = Counter(library for _, _, _, library, _ in RULES)
    for library in ("torchvision", "timm", "transformers", "ultralytics"):
        assert counts[library] > 0, f"no rules for {library}"


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: f"{rule[0]}:{rule[1]}")
def test_rule_is_well_formed(rule):
    number, type_, when, library, reason = rule
    where = f"{LIST.name}:{number}"
    assert TYPE_RE.fullmatch(type_), f"{where}: {type_!r} is not a dotted class name"
    assert when in WHENS, f"{where}: {when!r} is not one of {sorted(WHENS)}"
    assert library and LIBRARY_RE.fullmatch(library), f"{where}: bad library {library!r}"
    assert reason, f"{where}: the reason is empty"
    assert not reason.endswith("."), f"{where}: the reason ends with a period"
    assert "\t" not in reason, f"{where}: the reason holds a tab"
    # The library field names the package the type comes from.
    assert type_.split(".", 1)[0] == library.replace("-", "_"), (
        f"{where}: {type_} does not come from {library}"
    )


def test_no_duplicate_types():
    counts = Counter(type_ for _, type_, _, _, _ in RULES)
    duplicates = sorted(type_ for type_, count in counts.items() if count > 1)
    assert not duplicates, f"listed more than once: {duplicates}"


def test_no_rule_is_shadowed_by_an_earlier_pattern():
    # The first matching rule wins: a later rule matched by an earlier pattern never applies.
    patterns = []
    for number, type_, _, _, _ in RULES:
        for earlier_number, pattern in patterns:
            assert not fnmatch.fnmatchcase(type_, pattern), (
                f"line {number} ({type_}) is shadowed by line {earlier_number} ({pattern})"
            )
        if "*" in type_:
            patterns.append((number, type_))


def _problem(type_):
    """None if `type_` names an nn.Module class under exactly that name (or, for a
    pattern, matches one class of its module), else what is wrong."""
    return type_problem(type_, torch.nn.Module)


@pytest.mark.parametrize("library", LIBRARIES)
def test_listed_classes_exist(library):
    if library != "torch":  # torch is always installed; other libraries may be absent here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pytest.importorskip(library.replace("-", "_"))
    problems = [
        f"{LIST.name}:{number}: {type_}: {problem}"
        for number, type_, _, rule_library, _ in RULES
        if rule_library == library and (problem := _problem(type_)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_torch_classes_are_checked_without_optional_libraries():
    # The checker itself: a torch class resolves, a re-exported or missing name does not.
    assert _problem("torch.nn.modules.dropout.Dropout") is None
    assert "would name it" in _problem("torch.nn.Dropout")
    assert _problem("torch.nn.modules.dropout.NoSuchDropout") is not None
