"""Archives in forms other than a single training-IR program from torch.export.save:
several programs in one archive (torch.export.pt2_archive's package_pt2, with extra
files), and programs after ep.run_decompositions() (the functional inference IR)."""

import copy
import json

import pytest
import torch
from torch.export.pt2_archive._package import load_pt2, package_pt2

import models
from conftest import (
    MODES,
    archive_records,
    assert_matches_eager,
    eager_copy,
    inspect_json,
    load_module,
    program_sites,
    read_program,
    repack,
    run_exmode,
    run_ok,
    set_mode,
)

UNSUPPORTED = 5
PROGRAMS = {"encoder": "resnetish", "classifier": "mlp_dropout", "twice": "bn_twice"}


def _package(path, src):
    modules, eps = {}, {}
    for prog, name in PROGRAMS.items():
        module, x = models.MODELS[name]()
        modules[prog] = (copy.deepcopy(module), x)
        eps[prog] = torch.export.export(set_mode(module, src), (x,))
    package_pt2(str(path), exported_programs=eps, extra_files={"notes.txt": "kept as is\n"})
    return modules


@pytest.mark.parametrize("dst", MODES)
@pytest.mark.parametrize("src", MODES)
def test_every_program_is_switched(src, dst, tmp_path):
    in_path, out_path = tmp_path / "in.pt2", tmp_path / "out.pt2"
    modules = _package(in_path, src)
    run_ok(dst, in_path, "-o", out_path)

    report = inspect_json(out_path)
    assert sorted(p["name"] for p in report["programs"]) == sorted(PROGRAMS)
    assert all(p["mode"] == dst for p in report["programs"]), report
    contents = load_pt2(str(out_path))
    for prog, (module, x) in modules.items():
        assert {s["mode"] for s in program_sites(read_program(out_path, prog))} == {dst}, prog
        loaded = contents.exported_programs[prog].module()
        assert_matches_eager(loaded, eager_copy(module, dst), x)

    before, after = archive_records(in_path), archive_records(out_path)
    assert set(before) == set(after)
    for name in before:
        if not name.startswith("models/") and name != ".data/serialization_id":
            assert before[name] == after[name], f"record {name} changed"


# ---------------------------------------------------------------- decomposed programs


class DropoutBatchNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body, _ = models.conv_bn2d()
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x):
        return self.drop(self.body(x))


def _decomposed(path, src):
    torch.manual_seed(0)
    module = DropoutBatchNorm()
    _, x = models.conv_bn2d()
    initial = copy.deepcopy(module)
    ep = torch.export.export(set_mode(module, src), (x,)).run_decompositions({})
    torch.export.save(ep, str(path))
    return initial, x


@pytest.mark.parametrize("mode", MODES)
def test_baseline_decomposed_export_matches_eager(mode, tmp_path):
    """Needs no exmode: the decomposed program, loaded, behaves as eager in its mode."""
    path = tmp_path / "in.pt2"
    initial, x = _decomposed(path, mode)
    targets = {n["target"] for n in read_program(path)["graph_module"]["graph"]["nodes"]}
    assert "torch.ops.aten.batch_norm.default" not in targets  # really the inference IR
    assert_matches_eager(load_module(path), eager_copy(initial, mode), x)


@pytest.mark.parametrize("dst", MODES)
@pytest.mark.parametrize("src", MODES)
def test_decomposed_program_is_switched_or_refused(src, dst, tmp_path):
    """exmode either switches a decomposed program correctly (it then behaves as eager in
    the target mode), or says why not: refuses it as unsupported (exit 5, one line on stderr
    naming the file, no output), or warns of the sites it cannot make exact (an eval
    export's dropout keeps no p). Reporting success silently while leaving a training
    program in training mode is wrong."""
    in_path, out_path = tmp_path / "in.pt2", tmp_path / "out.pt2"
    initial, x = _decomposed(in_path, src)
    proc = run_exmode(dst, in_path, "-o", out_path)
    if proc.returncode == UNSUPPORTED:
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and in_path.name in lines[0], proc.stderr
        assert not out_path.exists()
        return
    assert proc.returncode == 0, proc
    if any(line.strip().startswith("warning:") for line in proc.stdout.splitlines()):
        assert src == "eval" and dst == "train", proc.stdout
        return
    assert_matches_eager(load_module(out_path), eager_copy(initial, dst), x)


class _DropoutInCond(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: self.drop(t), lambda t: t.sin(), (x,))


class _BatchNormInNoGrad(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(4)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x):
        with torch.no_grad():
            y = self.bn(x)
        return self.drop(y)


def _without_nested_tensor_values(src, dst):
    """The archive with every nested graph's tensor_values removed: no longer a graph torch
    wrote, so exmode keeps it verbatim."""
    records = archive_records(src)
    program = json.loads(records["models/model.json"])
    for node in program["graph_module"]["graph"]["nodes"]:
        for i in node["inputs"]:
            if "as_graph" in i["arg"]:
                del i["arg"]["as_graph"]["graph"]["tensor_values"]
    return repack(src, dst, modify={"models/model.json": json.dumps(program).encode()})


@pytest.mark.parametrize("factory", [_DropoutInCond, _BatchNormInNoGrad])
@pytest.mark.parametrize("command", ["eval", "train", "inspect"])
def test_sites_inside_incomplete_nested_graphs_are_refused(factory, command, tmp_path):
    """A mode-sensitive op inside a nested graph that is not a complete graph (kept
    verbatim) is not switched: refusing beats reporting a mode that is not true. Complete
    nested graphs are switched (test_regions.py)."""
    module = factory().train()
    exported = tmp_path / "exported.pt2"
    torch.export.save(torch.export.export(module, (torch.randn(3, 4),)), exported)
    src = _without_nested_tensor_values(exported, tmp_path / "nested.pt2")
    before = src.read_bytes()
    out = tmp_path / "out.pt2"
    args = [command, src] + ([] if command == "inspect" else ["-o", out])
    proc = run_exmode(*args)
    assert proc.returncode == UNSUPPORTED, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nested.pt2" in lines[0] and "nested graph" in lines[0], proc.stderr
    assert "not a complete graph" in lines[0], proc.stderr
    assert not out.exists()
    assert src.read_bytes() == before
