"""Numerical oracle: a program exported in mode A and switched by exmode to mode B must
behave exactly as the eager module in mode B (same outputs under the same seed, same
parameters and buffers afterwards), starting from the same initial state.

The baseline tests at the top need no exmode binary: they check that this harness can
tell modes apart and that a program exported directly in mode B matches eager mode B.
"""

import copy

import pytest
import torch

import models
from conftest import (
    MODES,
    assert_matches_eager,
    assert_same_state,
    eager_copy,
    export_and_save,
    inspect_json,
    load_module,
    program_mode,
    program_sites,
    read_program,
    run_ok,
    set_mode,
)

MODEL_NAMES = list(models.ALL_MODELS)
INSPECTED_NAMES = list(models.MODELS)
SWITCHES = [(n, a, b) for n in MODEL_NAMES for a in MODES for b in MODES if (n, a, b) not in models.INEXACT]


def _site_key(site):
    params = tuple(site[k] for k in ("p", "momentum", "eps") if k in site)
    return (site["op"], site["module"], params)


# ---------------------------------------------------------------- baselines (no exmode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_export_does_not_mutate_module(name, mode, tmp_path):
    module, x = models.ALL_MODELS[name]()
    initial = copy.deepcopy(module)
    export_and_save(module, (x,), mode, tmp_path / "m.pt2")
    assert_same_state(initial, module, context="after export: ")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_baseline_export_matches_eager(name, mode, export_cache):
    """An archive exported directly in mode B, loaded, behaves as eager mode B."""
    module, x = models.ALL_MODELS[name]()
    loaded = load_module(export_cache(name, mode))
    assert_matches_eager(loaded, eager_copy(module, mode), x)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", INSPECTED_NAMES)
def test_baseline_program_sites_match_module(name, mode, export_cache):
    """The sites read from torch's program JSON are those the eager module implies
    (op, module path, p / momentum / eps), in the export mode: validates the helpers
    the CLI tests use as their reference."""
    module, _ = models.ALL_MODELS[name]()
    sites = program_sites(read_program(export_cache(name, mode)))
    expected = models.expected_sites(module)
    assert sorted(map(_site_key, sites)) == sorted(map(_site_key, expected))
    for s in sites:
        fixed = any(e["module"] == s["module"] and e["fixed"] for e in expected)
        assert s["mode"] == ("fixed" if fixed else mode), s


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("src", MODES)
def test_baseline_modes_are_distinguishable(name, src, export_cache):
    """The mode-A archive, unswitched, does NOT match eager in the other mode, so the
    oracle tests below would catch a tool that does nothing (except for models that
    behave the same in both modes)."""
    dst = "eval" if src == "train" else "train"
    module, x = models.ALL_MODELS[name]()
    loaded = load_module(export_cache(name, src))
    if name in models.MODE_INSENSITIVE:
        assert_matches_eager(loaded, eager_copy(module, dst), x)
        return
    with pytest.raises(AssertionError):
        assert_matches_eager(loaded, eager_copy(module, dst), x)


# ---------------------------------------------------------------- exmode against eager


@pytest.mark.parametrize("name,src,dst", SWITCHES)
def test_switch_matches_eager(name, src, dst, tmp_path):
    module, x = models.ALL_MODELS[name]()
    initial = copy.deepcopy(module)  # the state both sides start from
    in_path, out_path = tmp_path / "in.pt2", tmp_path / "out.pt2"
    exported = copy.deepcopy(module)
    export_and_save(exported, (x,), src, in_path)
    assert_same_state(initial, exported, context="export mutated the module: ")

    run_ok(dst, in_path, "-o", out_path)

    loaded = load_module(out_path)
    eager = eager_copy(initial, dst)
    assert_matches_eager(loaded, eager, x)


@pytest.mark.parametrize("dst", MODES)
@pytest.mark.parametrize("src", MODES)
@pytest.mark.parametrize("name", INSPECTED_NAMES)
def test_switch_inspect_reports_target_mode(name, src, dst, tmp_path, export_cache):
    module, _ = models.ALL_MODELS[name]()
    out_path = tmp_path / "out.pt2"
    run_ok(dst, export_cache(name, src), "-o", out_path)

    report = inspect_json(out_path)
    assert len(report["programs"]) == 1, report
    program = report["programs"][0]
    expected = models.expected_sites(module)
    expected_modes = sorted("fixed" if e["fixed"] else dst for e in expected)
    assert sorted(s["mode"] for s in program["sites"]) == expected_modes, program
    want = "none" if all(e["fixed"] for e in expected) else dst
    assert program["mode"] == want, program
    # What exmode reports agrees with what torch reads from the switched program.
    assert program_mode(program_sites(read_program(out_path))) == want


@pytest.mark.parametrize("name", ["resnetish", "nested", "bn_twice", "attention", "instance_norm_stats", "rrelu"])
def test_many_switches_match_eager(name, tmp_path, export_cache):
    """train -> eval -> train -> eval, each step checked against eager."""
    module, x = models.ALL_MODELS[name]()
    path = export_cache(name, "train")
    for i, mode in enumerate(["eval", "train", "eval"]):
        out = tmp_path / f"step{i}.pt2"
        run_ok(mode, path, "-o", out)
        assert_matches_eager(load_module(out), eager_copy(module, mode), x, seed=100 + i)
        path = out


# ---------------------------------------------------------------- other ways of exporting


@pytest.mark.parametrize("dst", MODES)
@pytest.mark.parametrize("src", MODES)
@pytest.mark.parametrize("name", ["conv_bn2d", "bn_twice", "resnetish", "nested", "dropout_inplace",
                                  "functional_dropout", "alpha_dropout", "bn_no_running_stats_dropout"])
def test_strict_export_switch_matches_eager(name, src, dst, tmp_path):
    """torch.export.export(strict=True) traces through dynamo and drops buffers the graph
    never reads: an eval-mode program has no num_batches_tracked input at all, so that
    counter cannot be compared (and cannot be incremented after a switch to train).
    Everything else must match eager."""
    module, x = models.ALL_MODELS[name]()
    initial = copy.deepcopy(module)
    set_mode(module, src)
    in_path, out_path = tmp_path / "in.pt2", tmp_path / "out.pt2"
    torch.export.save(torch.export.export(module, (x,), strict=True), str(in_path))
    run_ok(dst, in_path, "-o", out_path)
    missing_ok = ("num_batches_tracked",) if src == "eval" else ()
    assert_matches_eager(load_module(out_path), eager_copy(initial, dst), x, missing_ok=missing_ok)


@pytest.mark.parametrize("dst", MODES)
def test_mixed_program(dst, tmp_path):
    """A model exported in train mode with one submodule left in eval mode gives a mixed
    program; switching makes it behave as the whole eager model in the target mode."""
    module, x = models.resnetish()
    initial = copy.deepcopy(module)
    module.train()
    module.layer1.eval()
    in_path, out_path = tmp_path / "in.pt2", tmp_path / "out.pt2"
    torch.export.save(torch.export.export(module, (x,)), str(in_path))
    assert program_mode(program_sites(read_program(in_path))) == "mixed"
    assert inspect_json(in_path)["programs"][0]["mode"] == "mixed"
    run_ok(dst, in_path, "-o", out_path)
    assert inspect_json(out_path)["programs"][0]["mode"] == dst
    assert_matches_eager(load_module(out_path), eager_copy(initial, dst), x)


@pytest.mark.parametrize("dst", MODES)
@pytest.mark.parametrize("src", MODES)
@pytest.mark.parametrize("name", ["resnetish", "bn_twice", "mlp_dropout"])
def test_dynamic_batch_switch_matches_eager(name, src, dst, tmp_path):
    """A program exported with a symbolic batch size switches and then runs at other
    batch sizes exactly as eager does."""
    module, x = models.ALL_MODELS[name]()
    initial = copy.deepcopy(module)
    set_mode(module, src)
    batch = torch.export.Dim("batch", min=2, max=64)
    ep = torch.export.export(module, (x,), dynamic_shapes=({0: batch},))
    in_path, out_path = tmp_path / "in.pt2", tmp_path / "out.pt2"
    torch.export.save(ep, str(in_path))
    run_ok(dst, in_path, "-o", out_path)
    loaded, eager = load_module(out_path), eager_copy(initial, dst)
    for n in (3, 7):
        bigger = torch.randn((n,) + tuple(x.shape[1:]), generator=torch.Generator().manual_seed(n))
        assert_matches_eager(loaded, eager, bigger, seed=n, steps=1)
