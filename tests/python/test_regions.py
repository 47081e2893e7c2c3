"""Mode-sensitive ops inside nested regions (higher-order-op subgraphs): torch.cond branches,
torch.no_grad() regions (wrap_with_set_grad_enabled) and autocast regions
(wrap_with_autocast). Each model is exported in one mode, switched to the other, and
compared with torch's own export in the target mode (nested graphs included, node for node,
names and all) and, loaded, with the eager module in the target mode (outputs and buffers,
bit for bit, same seeds)."""

import copy
import json

import pytest
import torch
from torch import nn

from conftest import inspect_json, read_program, run_exmode, run_ok

UNSUPPORTED = 5


class CondBranches(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, pred):
        return torch.cond(pred, lambda t: self.inner(t) + 1, lambda t: self.inner(t) - 1, (x,))


class NoGradRegion(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, pred):
        x = x * 2
        with torch.no_grad():
            y = self.inner(x)
        return y + pred.float()


class AutocastRegion(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, pred):
        x = x * 2
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = self.inner(x)
        return y.float() + pred.float()


class NoGradMixed(nn.Module):
    """Two batch norms (one inside, one outside the region) and a dropout in the region."""

    def __init__(self):
        super().__init__()
        self.bn_out = nn.BatchNorm2d(3, momentum=0.3)
        self.bn_in = nn.BatchNorm2d(3, momentum=0.2)
        self.drop = nn.Dropout(0.4)

    def forward(self, x, pred):
        x = self.bn_out(x)
        with torch.no_grad():
            y = self.drop(self.bn_in(x * 2))
        return y + pred.float()


INNERS = {
    "dropout": lambda: nn.Dropout(0.3),
    "batch_norm": lambda: nn.BatchNorm2d(3, momentum=0.25),
    "rrelu": lambda: nn.RReLU(),
}
CASES = {
    f"{region}_{inner}": (lambda r=r, i=i: r(INNERS[i]()))
    for region, r in (("cond", CondBranches), ("no_grad", NoGradRegion), ("autocast", AutocastRegion))
    for inner, i in (("dropout", "dropout"), ("batch_norm", "batch_norm"), ("rrelu", "rrelu"))
}
CASES["no_grad_mixed"] = NoGradMixed
# torch refuses to export a batch norm updating its statistics inside a torch.cond branch.
NOT_EXPORTABLE = {("cond_batch_norm", "train")}
DIRECTIONS = [("train", "eval"), ("eval", "train")]


def _inputs():
    torch.manual_seed(7)
    return torch.randn(2, 3, 4, 4), torch.tensor(True)


def _model(name):
    torch.manual_seed(0)
    return CASES[name]()


def _export(module, mode, path):
    module.train(mode == "train")
    torch.export.save(torch.export.export(module, _inputs()), str(path))
    return path


def _graph_entries(graph):
    """A graph as comparable entries: inputs, outputs, tensor_values names and each node's
    target, name, inputs and outputs (metadata dropped), nested graphs the same way."""
    nodes = []
    for n in graph["nodes"]:
        inputs = []
        for i in n["inputs"]:
            arg = i["arg"]
            if "as_graph" in arg:
                arg = {"as_graph": {"name": arg["as_graph"]["name"],
                                    "graph": _graph_entries(arg["as_graph"]["graph"])}}
            inputs.append([i["name"], arg, i.get("kind")])
        nodes.append({"target": n["target"], "name": n["name"], "inputs": inputs, "outputs": n["outputs"]})
    return {"inputs": graph["inputs"], "outputs": graph["outputs"], "nodes": nodes,
            "tensor_values": sorted(graph["tensor_values"])}  # a JSON object: order is not meaning


def _entries(path):
    return _graph_entries(read_program(path)["graph_module"]["graph"])


def _assert_runs_like_eager(path, eager, steps=3):
    loaded = torch.export.load(str(path)).module()
    x, pred = _inputs()
    for step in range(steps):
        for p in (pred, ~pred) if isinstance(eager, CondBranches) else (pred,):
            torch.manual_seed(100 + step)
            expected = eager(x.clone(), p)
            torch.manual_seed(100 + step)
            actual = loaded(x.clone(), p)
            assert torch.equal(expected, actual), f"step {step}: output differs from eager"
            e_bufs, l_bufs = dict(eager.named_buffers()), dict(loaded.named_buffers())
            assert set(e_bufs) == set(l_bufs)
            for k, v in e_bufs.items():
                assert torch.equal(v, l_bufs[k]), f"step {step}: buffer {k} differs: {v} vs {l_bufs[k]}"


@pytest.mark.parametrize("src_mode,dst_mode", DIRECTIONS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_switched_like_torch_and_eager(name, src_mode, dst_mode, tmp_path):
    if (name, src_mode) in NOT_EXPORTABLE:
        pytest.skip("torch does not export it")
    module = _model(name)
    src = _export(copy.deepcopy(module), src_mode, tmp_path / "src.pt2")
    before = src.read_bytes()
    out = tmp_path / "out.pt2"
    if (name, dst_mode) in NOT_EXPORTABLE:
        proc = run_exmode(dst_mode, src, "-o", out)
        assert proc.returncode == UNSUPPORTED, proc
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "src.pt2" in lines[0], proc.stderr
        assert "cond/true_graph_0/batch_norm" in lines[0] and "input mutation" in lines[0], lines[0]
        assert not out.exists() and src.read_bytes() == before
        return
    proc = run_ok(dst_mode, src, "-o", out)
    assert f"{src_mode} -> {dst_mode}" in proc.stdout, proc.stdout
    assert src.read_bytes() == before
    reference = _export(copy.deepcopy(module), dst_mode, tmp_path / "reference.pt2")
    assert _entries(out) == _entries(reference), (
        f"differs from torch's {dst_mode} export:\n{json.dumps(_entries(out))[:3000]}\n"
        f"{json.dumps(_entries(reference))[:3000]}")
    _assert_runs_like_eager(out, copy.deepcopy(module).train(dst_mode == "train"))
    # And back: the program exported in the first mode, node for node.
    back = tmp_path / "back.pt2"
    run_ok(src_mode, out, "-o", back)
    assert _entries(back) == _entries(src)
    _assert_runs_like_eager(back, copy.deepcopy(module).train(src_mode == "train"))


@pytest.mark.parametrize("name", ["cond_dropout", "no_grad_batch_norm", "autocast_batch_norm", "no_grad_mixed"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_inspect_names_the_nodes_inside_regions(name, mode, tmp_path):
    if (name, mode) in NOT_EXPORTABLE:
        pytest.skip("torch does not export it")
    src = _export(_model(name), mode, tmp_path / "src.pt2")
    report = inspect_json(src)["programs"][0]
    assert report["mode"] == mode
    nodes = [s["node"] for s in report["sites"]]
    expected = {
        "cond_dropout": ["cond/true_graph_0/dropout", "cond/false_graph_0/dropout"],
        "no_grad_batch_norm": ["batch_norm/submod_1/batch_norm"],
        "autocast_batch_norm": ["batch_norm/submod_1/batch_norm"],
        "no_grad_mixed": ["batch_norm", "dropout/submod_1/batch_norm_1", "dropout/submod_1/dropout"],
    }[name]
    assert nodes == expected, report
    assert {s["mode"] for s in report["sites"]} == {mode}


def test_a_region_left_alone_is_written_byte_for_byte(tmp_path):
    """A switch that changes only the program's own graph leaves a region's text as it was."""

    class Outside(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.3)

        def forward(self, x, pred):
            with torch.no_grad():
                y = torch.relu(x * 2)
            return self.drop(y) + pred.float()

    src = _export(Outside(), "train", tmp_path / "src.pt2")
    out = tmp_path / "out.pt2"
    run_ok("eval", src, "-o", out)
    region = lambda p: json.dumps(next(  # noqa: E731
        i["arg"] for n in read_program(p)["graph_module"]["graph"]["nodes"] for i in n["inputs"]
        if "as_graph" in i["arg"]))
    assert region(out) == region(src)


def test_mixed_regions_are_reported_mixed(tmp_path):
    """The mode of a program counts its regions' sites: a no_grad region switched alone
    (its batch norm in eval, the rest in train) is mixed."""
    module = _model("no_grad_mixed")
    src = _export(copy.deepcopy(module), "train", tmp_path / "src.pt2")
    program = read_program(src)
    text = json.dumps(program)
    # The batch norm inside the region to eval by hand, as an eval export writes it.
    region_bn = '"name": "training", "arg": {"as_bool": true}'
    assert text.count(region_bn) == 2
    at = text.rindex(region_bn)
    text = text[:at] + region_bn.replace("true", "false") + text[at + len(region_bn):]
    from conftest import repack
    mixed = repack(src, tmp_path / "mixed.pt2", modify={"models/model.json": text.encode()})
    assert inspect_json(mixed)["programs"][0]["mode"] == "mixed"


@pytest.mark.parametrize("name", ["no_grad_batch_norm", "cond_dropout", "autocast_dropout"])
def test_the_fx_host_refuses_sites_in_regions(name):
    """exmode.torch switches a module's FX graph, whose nested graphs it does not reach:
    refused with the way out (switch the saved program), the module left as it was."""
    import exmode
    import exmode.torch as et

    m = torch.export.export(_model(name).eval(), _inputs()).module()
    code = m.code
    with pytest.raises(exmode.UnsupportedError, match="nested graph.*switch the file"):
        et.move_exported_model_to_train(m)
    assert m.code == code
