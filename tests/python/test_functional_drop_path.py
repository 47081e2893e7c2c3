"""Drop path in the functional IR of `ep.run_decompositions({})` and in core ATen
(`ep.run_decompositions()`): the torchvision, timm, Hugging Face and hand-written forms
(copies of their code in test_drop_path.py), whose in-place bernoulli_ / div_ / floor_
become bernoulli.p / div / floor. Switched to eval and back; the oracles are torch's own
decomposed train and eval exports and eager PyTorch with the same seed."""

import copy

import pytest
import torch
from torch import nn

from conftest import (
    archive_records,
    assert_matches_eager,
    first_difference,
    load_module,
    node_list,
    read_program,
    run_exmode,
    run_ok,
    set_mode,
)
from test_drop_path import FORMS, X, DropPath, model, timm_drop_path

IRS = ("functional", "core")


def decomposed(module, mode, ir, path, x=X):
    set_mode(module, mode)
    ep = torch.export.export(module, (x,))
    ep = ep.run_decompositions({}) if ir == "functional" else ep.run_decompositions()
    torch.export.save(ep, str(path))


def exports(m, ir, tmp_path, x=X):
    train, evl = tmp_path / "train.pt2", tmp_path / "eval.pt2"
    decomposed(copy.deepcopy(m), "train", ir, train, x)
    decomposed(copy.deepcopy(m), "eval", ir, evl, x)
    return train, evl


def assert_same_nodes(expected_path, actual_path, canonical):
    a = node_list(read_program(expected_path), canonical_names=canonical)
    b = node_list(read_program(actual_path), canonical_names=canonical)
    assert a == b, first_difference(a, b)


def warnings_of(proc):
    return [line for line in proc.stdout.splitlines() if line.strip().startswith("warning:")]


def drop_path_warnings(proc):
    """Warnings about the drop paths (the test blocks' nn.Identity is warned on its own)."""
    return [w for w in warnings_of(proc) if "drop_path" in w or "bernoulli" in w or "rand" in w]


@pytest.mark.parametrize("ir", IRS)
@pytest.mark.parametrize("form", FORMS)
def test_eval_then_train(form, ir, tmp_path):
    m = model(form)
    train, evl = exports(m, ir, tmp_path)
    to_eval, back = tmp_path / "to_eval.pt2", tmp_path / "back.pt2"
    proc = run_ok("eval", train, "-o", to_eval)
    assert proc.stdout.count("drop_path p=") == 2 and not drop_path_warnings(proc), proc.stdout
    assert not any("bernoulli" in n["target"] for n in node_list(read_program(to_eval)))
    assert_matches_eager(load_module(to_eval), copy.deepcopy(m).eval(), X, steps=1)
    assert_same_nodes(evl, to_eval, canonical=True)
    proc = run_ok("train", to_eval, "-o", back)
    assert not drop_path_warnings(proc), proc.stdout
    assert_matches_eager(load_module(back), copy.deepcopy(m).train(), X)
    assert_same_nodes(train, back, canonical=False)
    assert archive_records(back)["models/model.json"] == archive_records(train)["models/model.json"]


class Tail(nn.Module):
    """A drop path whose output is the program's output: nothing but the graph output reads
    it, and it ends the graph."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.drop_path = DropPath(timm_drop_path, drop_prob=0.25)

    def forward(self, x):
        return self.drop_path(self.conv(x))


@pytest.mark.parametrize("ir", IRS)
def test_a_chain_that_ends_the_graph(ir, tmp_path):
    torch.manual_seed(3)
    m = Tail()
    train, evl = exports(m, ir, tmp_path)
    to_eval, back = tmp_path / "to_eval.pt2", tmp_path / "back.pt2"
    proc = run_ok("eval", train, "-o", to_eval)
    assert "drop_path p=0.25" in proc.stdout and not warnings_of(proc), proc.stdout
    assert_same_nodes(evl, to_eval, canonical=True)
    assert_matches_eager(load_module(to_eval), copy.deepcopy(m).eval(), X, steps=1)
    proc = run_ok("train", to_eval, "-o", back)
    assert not warnings_of(proc), proc.stdout
    # The last node is re-created in front of the chain: a fresh name, the same program.
    assert_same_nodes(train, back, canonical=True)
    assert_matches_eager(load_module(back), copy.deepcopy(m).train(), X)


@pytest.mark.parametrize("ir", IRS)
def test_an_eval_export_is_warned_not_restored(ir, tmp_path):
    _, evl = exports(model("timm"), ir, tmp_path)
    back = tmp_path / "b.pt2"
    proc = run_exmode("train", evl, "-o", back)
    assert proc.returncode == 0, proc.stderr
    assert any("drop_path" in line for line in warnings_of(proc)), proc.stdout
    assert "bernoulli" not in archive_records(back)["models/model.json"].decode()


NEAR_MISSES = {
    # timm with scale_by_keep=False: the mask is not scaled by 1/keep.
    "unscaled": lambda x, training: timm_drop_path(x, 0.2, training, scale_by_keep=False),
    # A divisor other than the keep probability.
    "other_divisor": lambda x, training: x * x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(0.8).div_(0.7)
    if training else x,
    # A mask over rows of the last dimension: not a per-sample, per-channel or whole mask.
    "odd_shape": lambda x, training: x * x.new_empty((x.shape[0], 1, 1, x.shape[3])).bernoulli_(0.8).div_(0.8)
    if training else x,
}


def mask_used_twice(x, training):
    if not training:
        return x
    mask = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(0.8).div_(0.8)
    return x * mask + mask


NEAR_MISSES["mask_used_twice"] = mask_used_twice


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.drop_path = DropPath(fn)

    def forward(self, x):
        return x + self.drop_path(self.conv(x))


@pytest.mark.parametrize("ir", IRS)
@pytest.mark.parametrize("name", list(NEAR_MISSES))
def test_near_misses_are_left_alone_and_warned(name, ir, tmp_path):
    torch.manual_seed(0)
    train, _ = exports(Residual(NEAR_MISSES[name]), ir, tmp_path)
    to_eval = tmp_path / "e.pt2"
    proc = run_ok("eval", train, "-o", to_eval)
    assert "drop_path p=" not in proc.stdout, proc.stdout
    assert any("bernoulli" in line for line in warnings_of(proc)), proc.stdout
    assert "aten.bernoulli.p" in archive_records(to_eval)["models/model.json"].decode()
