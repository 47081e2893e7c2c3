"""The checked-in archives: examples/resnetish_train.pt2 switches to eval (and back to
train) matching the eager model it was built from, and tests/data's archives are what
their manifest says."""

import importlib.util
import json

import pytest

from conftest import (
    REPO,
    assert_matches_eager,
    eager_copy,
    inspect_json,
    load_module,
    program_sites,
    read_program,
    run_ok,
)

EXAMPLE = REPO / "examples" / "resnetish_train.pt2"
DATA = REPO / "tests" / "data"


def _example_module():
    spec = importlib.util.spec_from_file_location("make_example", REPO / "examples" / "make_example.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build()


def test_example_archive_matches_script():
    """The committed example is what make_example.py builds (same program sites)."""
    model, _ = _example_module()
    sites = program_sites(read_program(EXAMPLE))
    assert {s["mode"] for s in sites} == {"train"}
    n_bn = sum(1 for m in model.modules() if type(m).__name__ == "BatchNorm2d")
    assert sum(1 for s in sites if s["op"] == "aten.batch_norm.default") == n_bn


@pytest.mark.parametrize("modes", [["eval"], ["eval", "train"]], ids=["eval", "eval-train"])
def test_example_switch_matches_eager(modes, tmp_path):
    model, example = _example_module()
    path = EXAMPLE
    for i, mode in enumerate(modes):
        out = tmp_path / f"step{i}.pt2"
        run_ok(mode, path, "-o", out)
        path = out
    assert_matches_eager(load_module(path), eager_copy(model, modes[-1]), example)


MANIFEST = json.loads((DATA / "expected_sites.json").read_text())


@pytest.mark.parametrize("filename", sorted(MANIFEST))
def test_data_archives_match_manifest(filename):
    entry = MANIFEST[filename]
    assert program_sites(read_program(DATA / filename)) == entry["sites"]
    report = inspect_json(DATA / filename)
    sites = sorted(report["programs"][0]["sites"], key=lambda s: s["node"])
    assert sites == sorted(entry["sites"], key=lambda s: s["node"])
