"""Batch norm's older and device-specific forms: _native_batch_norm_legit (and .no_stats),
_native_batch_norm_legit_no_training, native_batch_norm, cudnn_batch_norm,
miopen_batch_norm, _batch_norm_with_update / _batch_norm_no_update, and what
run_decompositions() makes of them (_native_batch_norm_legit_functional with either flag,
_batch_norm_with_update_functional).

nn.BatchNorm writes none of these with torch 2.13; a module calling the op itself does, and
torch.export writes its programs in both modes here, so every fixture is torch's own program,
made at test time. cudnn and miopen have no CPU kernel: their programs are still traced (by
their meta functions), loaded with torch.export.load, and run through torch's decompositions
of the two ops under the Python dispatcher, the eager module too.

Each form is exported in both modes, in the default IR and decomposed, switched both ways by
exmode, and compared with torch's program in the target mode (canonical node lists, output
specs) and run seeded against the eager module in the target mode (outputs and buffers).
"""

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._dispatch.python import enable_python_dispatcher

from conftest import MODES, inspect_json, load_module, node_list, read_program, run_exmode, set_mode

A = torch.ops.aten
GPU_FORMS = ("cudnn", "miopen")


class FormNet(torch.nn.Module):
    """conv -> batch norm through one op form -> relu, counting num_batches_tracked in
    training as nn.BatchNorm2d does. `form` picks the op each mode calls:
    legit: _native_batch_norm_legit(training=self.training); legit_pair: that in training,
    _native_batch_norm_legit_no_training in eval (older exports' pair); native:
    native_batch_norm; update: _batch_norm_with_update / _batch_norm_no_update; cudnn,
    miopen: the device ops; no_stats: _native_batch_norm_legit.no_stats (no running
    statistics: the same in both modes)."""

    def __init__(self, form, twice=False):
        super().__init__()
        self.form, self.twice = form, twice
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4, momentum=0.3, eps=1e-3)
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def norm(self, h):
        b, t, f = self.bn, self.training, self.form
        if t and f != "no_stats":
            b.num_batches_tracked.add_(1)
        args = (h, b.weight, b.bias, b.running_mean, b.running_var)
        if f == "legit":
            return A._native_batch_norm_legit.default(*args, t, b.momentum, b.eps)[0]
        if f == "legit_pair":
            if t:
                return A._native_batch_norm_legit.default(*args, True, b.momentum, b.eps)[0]
            return A._native_batch_norm_legit_no_training.default(*args, b.momentum, b.eps)[0]
        if f == "native":
            return A.native_batch_norm.default(*args, t, b.momentum, b.eps)[0]
        if f == "update":
            op = A._batch_norm_with_update.default if t else A._batch_norm_no_update.default
            return op(*args, b.momentum, b.eps)[0]
        if f == "cudnn":
            return A.cudnn_batch_norm.default(*args, t, b.momentum, b.eps)[0]
        if f == "miopen":
            return A.miopen_batch_norm.default(*args, t, b.momentum, b.eps)[0]
        if f == "no_stats":
            return A._native_batch_norm_legit.no_stats(h, b.weight, b.bias, True, b.momentum, b.eps)[0]
        raise ValueError(f)

    def forward(self, x):
        h = self.norm(self.conv(x))
        if self.twice:
            h = self.norm(h)
        return h.relu()


def running(form):
    """Where the form's ops run on CPU: directly, or through torch's decompositions (miopen's
    is registered by importing torch._inductor.decomposition, which from then on also makes
    run_decompositions() decompose miopen_batch_norm in this process)."""
    if form == "miopen":
        import torch._inductor.decomposition  # noqa: F401
    return enable_python_dispatcher() if form in GPU_FORMS else contextlib.nullcontext()


def make(form, twice=False):
    torch.manual_seed(0)
    return FormNet(form, twice), torch.randn(2, 3, 8, 8)


def export_form(form, mode, ir, path, twice=False):
    module, x = make(form, twice)
    set_mode(module, mode)
    ep = torch.export.export(module, (x,))
    if ir == "functional":
        ep = ep.run_decompositions({})
    elif ir == "core":
        ep = ep.run_decompositions()
    torch.export.save(ep, str(path))
    return path


def targets(path):
    return [n["target"].removeprefix("torch.ops.") for n in read_program(path)["graph_module"]["graph"]["nodes"]]


def signature(path):
    sig = read_program(path)["graph_module"]["signature"]
    return [(next(iter(s)), next(iter(s.values())).get("buffer_name")) for s in sig["output_specs"]]


def same_program(a, b):
    assert node_list(read_program(a), canonical_names=True) == node_list(read_program(b), canonical_names=True), (
        f"{targets(a)}\n != {targets(b)}")
    assert signature(a) == signature(b)


def matches_eager(path, form, mode, twice=False, steps=2):
    """The switched program against the eager module in `mode`, seeded alike, step by step:
    outputs and every buffer."""
    eager, x = make(form, twice)
    set_mode(eager, mode)
    loaded = load_module(path)
    with running(form):
        for step in range(steps):
            xs = x + step
            expected, actual = eager(xs.clone()), loaded(xs.clone())
            assert torch.equal(expected, actual), f"{form} {mode}: outputs differ at step {step}"
            state = dict(loaded.state_dict())
            for name, value in eager.state_dict().items():
                assert torch.equal(state[name], value), f"{form} {mode}: {name} differs at step {step}"


def switch(dst, src, out):
    """Switches, with no warning but the one every decomposed eval program gets going to train
    (that a dropout may have left no node: nothing in these programs can show there was none)."""
    proc = run_exmode(dst, src, "-o", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if "warning:" in line]
    assert all("decomposed program" in line for line in warnings), proc.stdout
    return proc


# The program torch writes in the target mode, where it is not the same form's: a
# _native_batch_norm_legit going to eval keeps its op (flag cleared), and the functional IR's
# train form goes to _native_batch_norm_legit_no_training, its eval form for nn.BatchNorm.
DEFAULT_IR_REFERENCE = {("legit_pair", "eval"): "legit"}
FUNCTIONAL_REFERENCE = {("legit", "eval"): "legit_pair"}

FORMS = ("legit", "legit_pair", "native", "update", "cudnn", "miopen")


def reference(form, mode, ir, exports, path, twice=False, table=DEFAULT_IR_REFERENCE):
    """torch's program in `mode` that a switch of `form` is compared with."""
    ref_form = table.get((form, mode), form)
    return exports[mode] if ref_form == form else export_form(ref_form, mode, ir, path, twice)


@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
@pytest.mark.parametrize("form", FORMS)
def test_default_ir_both_ways(form, twice, tmp_path):
    exports = {m: export_form(form, m, "default", tmp_path / f"{m}.pt2", twice) for m in MODES}
    for src, dst in [("train", "eval"), ("eval", "train")]:
        out = tmp_path / f"{src}_to_{dst}.pt2"
        switch(dst, exports[src], out)
        same_program(out, reference(form, dst, "default", exports, tmp_path / "ref.pt2", twice))
        matches_eager(out, form, dst, twice)
        # And back: torch's program in the source mode again.
        back = tmp_path / f"{src}_to_{dst}_back.pt2"
        switch(src, out, back)
        same_program(back, reference(form, src, "default", exports, tmp_path / "ref_back.pt2", twice))
        matches_eager(back, form, src, twice)


@pytest.mark.parametrize("ir", ["functional", "core"])
@pytest.mark.parametrize("form", ["legit", "legit_pair", "native", "update", "cudnn"])
def test_decomposed_both_ways(form, ir, tmp_path):
    exports = {m: export_form(form, m, ir, tmp_path / f"{m}.pt2") for m in MODES}
    for src, dst in [("train", "eval"), ("eval", "train")]:
        out = tmp_path / f"{src}_to_{dst}.pt2"
        switch(dst, exports[src], out)
        same_program(out, reference(form, dst, ir, exports, tmp_path / "ref.pt2", table=FUNCTIONAL_REFERENCE))
        matches_eager(out, form, dst)
        back = tmp_path / f"{src}_to_{dst}_back.pt2"
        switch(src, out, back)
        same_program(back, reference(form, src, ir, exports, tmp_path / "ref_back.pt2", table=FUNCTIONAL_REFERENCE))
        matches_eager(back, form, src)


def test_forms_torch_writes(tmp_path):
    """What each form becomes in each IR, as the tests above rely on (torch 2.13)."""
    bn = lambda path: [t for t in targets(path) if "batch_norm" in t]  # noqa: E731
    seen = {(f, m, ir): bn(export_form(f, m, ir, tmp_path / f"{f}{m}{ir}.pt2"))
            for f in FORMS for m in MODES for ir in ("default", "functional")}
    assert seen[("update", "train", "default")] == ["aten._batch_norm_with_update.default"]
    assert seen[("update", "eval", "default")] == ["aten._batch_norm_no_update.default"]
    assert seen[("update", "train", "functional")] == ["aten._batch_norm_with_update_functional.default"]
    assert seen[("update", "eval", "functional")] == ["aten._batch_norm_no_update.default"]
    assert seen[("legit", "eval", "functional")] == ["aten._native_batch_norm_legit_functional.default"]
    assert seen[("cudnn", "train", "default")] == ["aten.cudnn_batch_norm.default"]


def test_legit_functional_eval_flag_is_an_eval_site(tmp_path):
    """torch's decomposed eval export of _native_batch_norm_legit keeps the functional form
    with training=False (and mutations of unchanged statistics): it is eval, not train."""
    path = export_form("legit", "eval", "functional", tmp_path / "e.pt2")
    report = inspect_json(path)["programs"][0]
    assert report["mode"] == "eval", report
    assert [site["mode"] for site in report["sites"]] == ["eval"], report


def test_miopen_decomposed_is_refused_to_eval(tmp_path):
    """torch keeps miopen_batch_norm in a decomposed program, its counter incremented by a
    functional add: a flag flip would leave the count running, so going to eval is refused.
    (Exported in a fresh process: see running().)"""
    src = tmp_path / "t.pt2"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "import test_batch_norm_forms as t; "
            f"t.export_form('miopen', 'train', 'functional', {str(src)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)
    assert [t for t in targets(src) if "batch_norm" in t] == ["aten.miopen_batch_norm.default"]
    out = tmp_path / "out.pt2"
    proc = run_exmode("eval", src, "-o", out)
    assert proc.returncode == 5 and not out.exists(), proc.stdout + proc.stderr
    assert "miopen_batch_norm" in proc.stderr and "functional add" in proc.stderr


@pytest.mark.parametrize("ir", ["default", "functional"])
def test_no_stats_is_fixed(ir, tmp_path):
    """Without running statistics the form uses batch statistics in both modes: nothing to switch."""
    path = export_form("no_stats", "train", ir, tmp_path / "t.pt2")
    out = tmp_path / "out.pt2"
    run_exmode("eval", path, "-o", out)
    assert out.exists()
    same_program(out, path)
    matches_eager(out, "no_stats", "eval")


def test_saved_statistics_read_in_place_are_refused(tmp_path):
    """A program reading the saved batch mean of an in-place form cannot change mode: the eval
    form leaves it empty. Refused with the node named, nothing written."""

    class ReadsSaved(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(3)

        def forward(self, x):
            b = self.bn
            out = A._batch_norm_with_update.default(x, b.weight, b.bias, b.running_mean, b.running_var, 0.1, 1e-5)
            return out[0] + out[1].sum()

    src = tmp_path / "in.pt2"
    torch.export.save(torch.export.export(ReadsSaved(), (torch.randn(4, 3),)), str(src))
    out = tmp_path / "out.pt2"
    proc = run_exmode("eval", src, "-o", out)
    assert proc.returncode == 5 and not out.exists(), proc.stdout + proc.stderr
    assert "_batch_norm_with_update" in proc.stderr and "saved batch statistics" in proc.stderr


def test_switched_programs_keep_tensor_metadata(tmp_path):
    """The saved statistics' metadata is torch's in the target mode ([C] training, [0] eval),
    so the loaded program's fake values agree with what its kernels return."""
    for form in ("legit", "update", "cudnn"):
        exports = {m: export_form(form, m, "default", tmp_path / f"{form}{m}.pt2") for m in MODES}
        for src, dst in [("train", "eval"), ("eval", "train")]:
            out = tmp_path / f"{form}_{src}_to_{dst}.pt2"
            switch(dst, exports[src], out)

            def sizes(path):
                g = read_program(path)["graph_module"]["graph"]
                node = next(n for n in g["nodes"] if "batch_norm" in n["target"])
                names = [o["as_tensor"]["name"] for o in node["outputs"]]
                return [[s["as_int"] for s in g["tensor_values"][n]["sizes"]] for n in names]

            assert sizes(out) == sizes(exports[dst]), (form, dst)
            ep = torch.export.load(str(out))
            assert ep is not None
