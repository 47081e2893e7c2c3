"""Findings: what a switch cannot make exact is reported as a warning, never silently wrong.

Each kind of finding on a module written to show it: the warning line in the switch
report and in `inspect`, the `warnings` list of `inspect --json`, exit 0 by default and
exit 5 with nothing written under `--strict`. Where a case is warned, the test also shows
that the switched program really differs from eager (the warning is not a false alarm),
and where it is not warned, that it matches eager exactly.
"""

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import AuxHead
from conftest import (
    assert_matches_eager,
    eager_copy,
    export_and_save,
    inspect_json,
    load_module,
    run_exmode,
    run_ok,
)


def warnings_of(stdout):
    return [line.strip() for line in stdout.splitlines() if line.strip().startswith("warning:")]


def json_warnings(path):
    programs = inspect_json(path)["programs"]
    assert len(programs) == 1
    return programs[0]["warnings"]


def switch(src, mode, dst, *extra):
    """Switches src to `mode`; returns the warning lines, and checks --strict refuses them."""
    proc = run_ok(mode, src, "-o", dst, *extra)
    found = warnings_of(proc.stdout)
    strict_dst = dst.with_name(dst.stem + "_strict.pt2")
    strict = run_exmode(mode, src, "-o", strict_dst, "--strict", *extra)
    if found:
        assert strict.returncode == 5, strict
        assert not strict_dst.exists()
        assert "--strict" in strict.stderr and len(strict.stderr.strip().splitlines()) == 1
    else:
        assert strict.returncode == 0, strict
        assert strict_dst.exists()
    return found


def same_output(a, b, x, seed=7):
    torch.manual_seed(seed)
    ya = a(x.clone())
    torch.manual_seed(seed)
    yb = b(x.clone())
    if isinstance(ya, tuple) != isinstance(yb, tuple):
        return False
    if isinstance(ya, tuple):
        return len(ya) == len(yb) and all(torch.equal(p, q) for p, q in zip(ya, yb))
    return torch.equal(ya, yb)


# ---------------------------------------------------------------- modules


class GaussianNoise(nn.Module):
    """Noise added in training only: a random op no pass switches."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        h = self.drop(self.fc(x))
        if self.training:
            h = h + torch.randn_like(h) * 0.1
        return h


class ModeDependentAttention(nn.Module):
    """Attention written as most libraries write it: p chosen by mode."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.proj_drop = nn.Dropout(0.1)
        self.attn_p = 0.2

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_p if self.training else 0.0)
        w = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        w = F.dropout(w, p=self.attn_p if self.training else 0.0, training=self.training)
        return self.proj_drop(a + w @ v)


class ChannelDropoutResidual(nn.Module):
    """h = Dropout2d(x); h + x: an eval export records add(feature_dropout, feature_dropout)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.drop = nn.Dropout2d(0.5)

    def forward(self, x):
        x = self.conv(x)
        return self.drop(x) + x


class CumulativeBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(4, momentum=None)
        self.drop = nn.Dropout(0.2)

    def forward(self, x):
        return self.drop(self.bn(x))


class StackedLstm(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(6, 5, num_layers=3, dropout=0.4, batch_first=True)

    def forward(self, x):
        return self.rnn(x)[0]


def _seeded(factory, *args):
    torch.manual_seed(0)
    return factory(*args)


# ---------------------------------------------------------------- each kind


def test_unused_state_of_a_training_only_head(tmp_path):
    module = _seeded(AuxHead)
    x = torch.randn(4, 8)
    src = tmp_path / "aux_eval.pt2"
    export_and_save(module, (x,), "eval", src)
    listed = json_warnings(src)
    assert [(w["kind"], w["module"], w["when"]) for w in listed] == [("unused-state", "aux", "both")]
    found = switch(src, "train", tmp_path / "aux_train.pt2")
    assert len(found) == 1 and "unused-state" in found[0] and "  aux  " in found[0]
    # Not a false alarm: the switched program lacks the head that eager training runs.
    assert not same_output(load_module(tmp_path / "aux_train.pt2"), eager_copy(module, "train"), x)


def test_train_export_with_the_head_used_has_no_unused_state(tmp_path):
    module = _seeded(AuxHead)
    src = tmp_path / "aux_train.pt2"
    export_and_save(module, (torch.randn(4, 8),), "train", src)
    assert json_warnings(src) == []


def test_random_op_outside_every_site_is_warned_going_to_eval(tmp_path):
    module = _seeded(GaussianNoise)
    x = torch.randn(4, 8)
    src = tmp_path / "noise_train.pt2"
    export_and_save(module, (x,), "train", src)
    listed = json_warnings(src)
    assert [(w["kind"], w["op"], w["when"]) for w in listed] == [
        ("random-op", "aten.randn_like.default", "to-eval")
    ]
    found = switch(src, "eval", tmp_path / "noise_eval.pt2")
    assert len(found) == 1 and "random-op" in found[0]
    assert not same_output(load_module(tmp_path / "noise_eval.pt2"), eager_copy(module, "eval"), x)
    # Going back to train needs no warning: the noise is the train export's own.
    assert switch(tmp_path / "noise_eval.pt2", "train", tmp_path / "noise_back.pt2") == []


def test_attention_dropout_of_an_eval_export_is_unrecorded(tmp_path):
    module = _seeded(ModeDependentAttention)
    x = torch.randn(2, 5, 8)
    src = tmp_path / "attn_eval.pt2"
    export_and_save(module, (x,), "eval", src)
    kinds = sorted((w["kind"], w["op"]) for w in json_warnings(src))
    assert kinds == [
        ("unrecorded", "aten.dropout.default"),
        ("unrecorded", "aten.scaled_dot_product_attention.default"),
    ]
    found = switch(src, "train", tmp_path / "attn_train.pt2")
    assert len(found) == 2
    assert not same_output(load_module(tmp_path / "attn_train.pt2"), eager_copy(module, "train"), x)


def test_attention_dropout_of_a_train_export_switches_exactly(tmp_path):
    """sdpa outside nn.MultiheadAttention: zeroed for eval, restored for train, no warning."""
    module = _seeded(ModeDependentAttention)
    x = torch.randn(2, 5, 8)
    src = tmp_path / "attn_train.pt2"
    export_and_save(module, (x,), "train", src)
    assert json_warnings(src) == []
    assert switch(src, "eval", tmp_path / "attn_eval.pt2") == []
    assert_matches_eager(load_module(tmp_path / "attn_eval.pt2"), eager_copy(module, "eval"), x)
    assert switch(tmp_path / "attn_eval.pt2", "train", tmp_path / "attn_back.pt2") == []
    assert_matches_eager(load_module(tmp_path / "attn_back.pt2"), eager_copy(module, "train"), x)


def test_merged_dropout_of_an_eval_export(tmp_path):
    module = _seeded(ChannelDropoutResidual)
    x = torch.randn(2, 3, 4, 4)
    src = tmp_path / "merged_eval.pt2"
    export_and_save(module, (x,), "eval", src)
    listed = json_warnings(src)
    assert [(w["kind"], w["module"], w["when"]) for w in listed] == [
        ("merged-dropout", "drop", "to-train")
    ]
    assert len(switch(src, "train", tmp_path / "merged_train.pt2")) == 1
    assert not same_output(load_module(tmp_path / "merged_train.pt2"), eager_copy(module, "train"), x)


def test_unmerged_train_export_round_trips_without_warning(tmp_path):
    module = _seeded(ChannelDropoutResidual)
    x = torch.randn(2, 3, 4, 4)
    src = tmp_path / "merged_train.pt2"
    export_and_save(module, (x,), "train", src)
    assert json_warnings(src) == []
    assert switch(src, "eval", tmp_path / "e.pt2") == []
    assert_matches_eager(load_module(tmp_path / "e.pt2"), eager_copy(module, "eval"), x)
    assert switch(tmp_path / "e.pt2", "train", tmp_path / "t.pt2") == []
    assert_matches_eager(load_module(tmp_path / "t.pt2"), eager_copy(module, "train"), x)


def test_batch_norm_with_cumulative_average_is_inexact(tmp_path):
    module = _seeded(CumulativeBatchNorm)
    src = tmp_path / "cma_eval.pt2"
    export_and_save(module, (torch.randn(4, 4),), "eval", src)
    listed = json_warnings(src)
    assert [(w["kind"], w["module"]) for w in listed] == [("inexact", "bn")]
    assert len(switch(src, "train", tmp_path / "cma_train.pt2")) == 1


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_stacked_rnn_dropout_switches_exactly(tmp_path, cell, mode):
    module = _seeded(StackedLstm, cell)
    x = torch.randn(2, 4, 6)
    src = tmp_path / f"rnn_{mode}.pt2"
    export_and_save(module, (x,), mode, src)
    other = "eval" if mode == "train" else "train"
    dst = tmp_path / f"rnn_{other}.pt2"
    assert switch(src, other, dst) == []
    assert_matches_eager(load_module(dst), eager_copy(module, other), x)
    sites = inspect_json(dst)["programs"][0]["sites"]
    assert [s["mode"] for s in sites] == [other] and sites[0]["p"] == 0.4


# ---------------------------------------------------------------- module type lists


def test_user_module_type_list_flags_a_module_by_type(tmp_path):
    module = _seeded(AuxHead)
    src = tmp_path / "aux_train.pt2"
    export_and_save(module, (torch.randn(4, 8),), "train", src)
    rules = tmp_path / "types.txt"
    rules.write_text(
        "# a user's own list\n"
        f"{AuxHead.__module__}.AuxHead  both  tests  adds the auxiliary head's logits only in training\n"
    )
    found = switch(src, "eval", tmp_path / "aux_eval.pt2", "--module-types", rules)
    assert len(found) == 1 and "mode-dependent-module" in found[0] and "(tests)" in found[0]
    proc = run_ok("inspect", src, "--json", "--module-types", rules)
    listed = json.loads(proc.stdout)["programs"][0]["warnings"]
    assert [(w["kind"], w["module"], w["module_type"]) for w in listed] == [
        ("mode-dependent-module", "", f"{AuxHead.__module__}.AuxHead")
    ]
    # The same list from the environment.
    import os
    import subprocess

    from conftest import exmode_path

    env = dict(os.environ, EXMODE_MODULE_TYPES=str(rules))
    proc = subprocess.run([str(exmode_path()), "inspect", str(src)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "mode-dependent-module" in proc.stdout


@pytest.mark.parametrize(
    "text, message",
    [
        ("only.a.type\n", "types.txt:1: too few fields"),
        ("# fine\nsome.Type  sometimes  lib  a reason\n", "types.txt:2: 'sometimes' is not"),
    ],
)
def test_malformed_module_type_list_is_a_usage_error(tmp_path, text, message):
    rules = tmp_path / "types.txt"
    rules.write_text(text)
    src = tmp_path / "m.pt2"
    export_and_save(_seeded(GaussianNoise), (torch.randn(2, 8),), "train", src)
    for args in (("inspect", src), ("eval", src, "-o", tmp_path / "o.pt2")):
        proc = run_exmode(*args, "--module-types", rules)
        assert proc.returncode == 2, proc
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.pt2").exists()
    missing = run_exmode("inspect", src, "--module-types", tmp_path / "absent.txt")
    assert missing.returncode == 6 and "absent.txt" in missing.stderr


def test_switch_to_the_mode_a_program_is_in_warns_of_nothing(tmp_path):
    module = _seeded(GaussianNoise)
    src = tmp_path / "noise_train.pt2"
    export_and_save(module, (torch.randn(2, 8),), "train", src)
    assert switch(src, "train", tmp_path / "same.pt2") == []
