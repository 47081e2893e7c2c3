"""The oracle suite on the functional IR of `ep.run_decompositions({})` and on core ATen
(`ep.run_decompositions()`): every test model exported in both modes, decomposed, switched
to both modes by exmode, and compared with torch's own decomposed export in the target mode,
op for op and spec for spec, and by running both (outputs and buffers, seeded). Where the
switch is not exact it must say so: a switch that differs from torch's export without a
warning is the failure this suite exists to catch.
"""

import copy

import pytest
import torch

import models
from conftest import MODES, load_module, node_list, read_program, run_exmode, set_mode

IRS = ("functional", "core")


def decomposed_export(module, x, mode, ir, path):
    set_mode(module, mode)
    ep = torch.export.export(module, (x,))
    ep = ep.run_decompositions({}) if ir == "functional" else ep.run_decompositions()
    torch.export.save(ep, str(path))


def signature(path):
    sig = read_program(path)["graph_module"]["signature"]
    return [(next(iter(s)), next(iter(s.values())).get("buffer_name")) for s in sig["output_specs"]]


def outputs_match(loaded, reference, x, seed=99, steps=2):
    """Both modules run `steps` times, seeded alike: same outputs, same state after each."""
    for step in range(steps):
        torch.manual_seed(seed + step)
        expected = reference(x.clone())
        torch.manual_seed(seed + step)
        actual = loaded(x.clone())
        if expected.shape != actual.shape or not torch.equal(expected, actual):
            return False
        ref_state = dict(reference.state_dict())
        for name, value in loaded.state_dict().items():
            if name in ref_state and not torch.equal(value, ref_state[name]):
                return False
    return True


def warnings_of(proc):
    return [line for line in proc.stdout.splitlines() if line.strip().startswith("warning:")]


def is_erasure_warning(line):
    """A decomposed program's warning that a dropout may have left no node (it cannot tell
    a train export without dropout from an eval export whose dropout was erased)."""
    return "decomposed program" in line or "left no node" in line


def other_warnings(proc):
    return [line for line in warnings_of(proc) if not is_erasure_warning(line)]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("decomposed")
    cache = {}

    def get(name, mode, ir):
        key = (name, mode, ir)
        if key not in cache:
            module, x = models.MODELS[name]()
            path = root / f"{name}_{mode}_{ir}.pt2"
            decomposed_export(copy.deepcopy(module), x, mode, ir, path)
            cache[key] = (path, module, x)
        return cache[key]

    return get


@pytest.mark.parametrize("dst", MODES)
@pytest.mark.parametrize("src", MODES)
@pytest.mark.parametrize("ir", IRS)
@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_switch_matches_torch_or_warns(name, ir, src, dst, exports, tmp_path):
    src_path, module, x = exports(name, src, ir)
    ref_path, _, _ = exports(name, dst, ir)
    out = tmp_path / "out.pt2"
    proc = run_exmode(dst, src_path, "-o", out)
    if proc.returncode == 5:  # refused, with a reason, nothing written: allowed
        assert src != dst and not out.exists() and "exmode:" in proc.stderr, proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    exact = (
        node_list(read_program(out), canonical_names=True)
        == node_list(read_program(ref_path), canonical_names=True)
        and signature(out) == signature(ref_path)
        and outputs_match(load_module(out), load_module(ref_path), x)
    )
    if src == dst:
        assert exact and not other_warnings(proc), proc.stdout
    elif not exact:
        assert warnings_of(proc), f"switch differs from torch's {dst} export and nothing was said:\n{proc.stdout}"


# Models whose decomposed train export holds only what exmode switches exactly (batch norm,
# native_dropout, the bernoulli chains of in-place, feature and alpha dropout): both
# directions, and back, give torch's own programs.
EXACT_TO_EVAL = ["conv_bn2d", "bn1d_nc", "bn1d_ncl", "bn3d", "bn_affine_false", "bn_twice", "resnetish",
                 "mlp_dropout", "functional_dropout", "bn_no_running_stats",
                 "bn_no_running_stats_dropout", "rrelu", "with_constants", "dropout_inplace",
                 "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
                 "nested"]


@pytest.mark.parametrize("ir", IRS)
@pytest.mark.parametrize("name", EXACT_TO_EVAL)
def test_train_to_eval_is_exact_and_back(name, ir, exports, tmp_path):
    train_path, module, x = exports(name, "train", ir)
    eval_path, _, _ = exports(name, "eval", ir)
    to_eval, back = tmp_path / "eval.pt2", tmp_path / "back.pt2"
    proc = run_exmode("eval", train_path, "-o", to_eval)
    assert proc.returncode == 0 and not warnings_of(proc), proc.stdout + proc.stderr
    assert node_list(read_program(to_eval), canonical_names=True) == node_list(read_program(eval_path), canonical_names=True)
    assert signature(to_eval) == signature(eval_path)
    eager = set_mode(copy.deepcopy(module), "eval")
    assert outputs_match(load_module(to_eval), eager, x)
    # Back to train: what the switch removed was remembered, so this is exact too (a program
    # with no site exmode changed cannot show it came from train, and is warned of erasures).
    proc = run_exmode("train", to_eval, "-o", back)
    assert proc.returncode == 0 and not other_warnings(proc), proc.stdout + proc.stderr
    assert node_list(read_program(back), canonical_names=True) == node_list(read_program(train_path), canonical_names=True)
    assert signature(back) == signature(train_path)
    assert outputs_match(load_module(back), load_module(train_path), x)
    eager = set_mode(copy.deepcopy(module), "train")
    assert outputs_match(load_module(back), eager, x)


@pytest.mark.parametrize("ir", IRS)
@pytest.mark.parametrize("name", ["conv_bn2d", "bn_twice", "bn3d", "bn1d_nc", "bn_affine_false"])
def test_batch_norm_eval_export_to_train_is_exact(name, ir, exports, tmp_path):
    eval_path, module, x = exports(name, "eval", ir)
    train_path, _, _ = exports(name, "train", ir)
    out = tmp_path / "train.pt2"
    proc = run_exmode("train", eval_path, "-o", out)
    # Exact, and warned only that an eval export's dropouts may have left no node.
    assert proc.returncode == 0 and warnings_of(proc) and not other_warnings(proc), proc.stdout + proc.stderr
    assert node_list(read_program(out), canonical_names=True) == node_list(read_program(train_path), canonical_names=True)
    assert signature(out) == signature(train_path)
    eager = set_mode(copy.deepcopy(module), "train")
    assert outputs_match(load_module(out), eager, x)


@pytest.mark.parametrize("ir", IRS)
def test_erased_dropout_is_never_silent(ir, exports, tmp_path):
    """An eval export's dropout decomposes to a clone without p: going to train is warned,
    and --strict refuses, writing nothing."""
    eval_path, _, _ = exports("mlp_dropout", "eval", ir)
    out = tmp_path / "train.pt2"
    proc = run_exmode("train", eval_path, "-o", out)
    assert proc.returncode == 0
    lines = other_warnings(proc)
    assert lines and all("unrecorded" in line and "clone" in line for line in lines), proc.stdout
    assert any("decomposed program" in line for line in warnings_of(proc)), proc.stdout
    strict = tmp_path / "strict.pt2"
    proc = run_exmode("train", "--strict", eval_path, "-o", strict)
    assert proc.returncode == 5 and not strict.exists(), proc.stderr


def test_saved_statistics_read_are_refused(tmp_path):
    """A program that reads batch norm's saved mean (output 1) cannot go to eval, whose form
    does not compute it: refused with the node named, nothing written."""

    class ReadsSaved(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("rm", torch.zeros(3))
            self.register_buffer("rv", torch.ones(3))

        def forward(self, x):
            out = torch.ops.aten._native_batch_norm_legit_functional.default(
                x, None, None, self.rm, self.rv, True, 0.1, 1e-5)
            return out[0] + out[1].sum()

    src = tmp_path / "in.pt2"
    ep = torch.export.export(ReadsSaved(), (torch.randn(4, 3),)).run_decompositions({})
    torch.export.save(ep, str(src))
    out = tmp_path / "out.pt2"
    proc = run_exmode("eval", src, "-o", out)
    assert proc.returncode == 5 and not out.exists(), proc.stdout + proc.stderr
    assert "saved batch statistics" in proc.stderr
