"""User rules (`--rules FILE`, `rules=`; docs/RULES.md), against torch.

Custom ops registered with torch.library, exported in both modes, switched by op rules and
compared with the eager module in the target mode (same seed) and with torch's own export
in that mode, node for node; attention dropout an eval export did not record, given by an
attention_dropout rule, against torch's train export and eager; malformed rule files.
"""

import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import exmode
import exmode.torch as et
from conftest import (
    assert_matches_eager,
    export_and_save,
    file_sha256,
    inspect_json,
    load_module,
    node_list,
    read_program,
    run_exmode,
    run_ok,
)

# ---------------------------------------------------------------- custom ops

LIB = "exmode_rules_test"
torch.library.define(f"{LIB}::noisy", "(Tensor x, float p, bool train) -> Tensor")
torch.library.define(f"{LIB}::mix", "(Tensor x, str mode, float scale) -> Tensor")
torch.library.define(f"{LIB}::jitter", "(Tensor x, float p=0.5, bool train=False) -> Tensor")


@torch.library.impl(f"{LIB}::noisy", "CPU")
def _noisy(x, p, train):
    return x + p * torch.randn_like(x) if train and p != 0.0 else x.clone()


@torch.library.impl(f"{LIB}::mix", "CPU")
def _mix(x, mode, scale):
    if mode == "train":
        return x * scale + torch.rand_like(x)
    if mode == "eval":
        return x * scale
    raise ValueError(mode)


@torch.library.impl(f"{LIB}::jitter", "CPU")
def _jitter(x, p=0.5, train=False):
    return x * (1.0 + p * (torch.rand_like(x) - 0.5)) if train else x.clone()


for _name in ("noisy", "mix", "jitter"):
    torch.library.register_fake(f"{LIB}::{_name}")(lambda x, *args: torch.empty_like(x))

ops = getattr(torch.ops, LIB)

OP_RULES = f"""\
# the custom ops of this test
op {LIB}.noisy.default train train=True eval=False if p!=0.0
op {LIB}::mix mode train="train" eval="eval"
op torch.ops.{LIB}.jitter.default train train=True eval=none
"""


class NoisyNet(nn.Module):
    """Custom ops whose mode argument follows self.training, and one that does not."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.out = nn.Linear(6, 6)

    def forward(self, x):
        h = ops.noisy(self.lin(x), 0.3, self.training)
        h = ops.noisy(h, 0.0, False)  # the same in both modes: not a site (the condition)
        h = ops.mix(h, "train" if self.training else "eval", 2.0)
        # Eval leaves `train` at its default, so the eval export omits it.
        h = ops.jitter(h, 0.25, True) if self.training else ops.jitter(h, 0.25)
        return self.out(h)


def _model():
    torch.manual_seed(0)
    return NoisyNet(), torch.randn(3, 6)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("rules")
    rules = root / "ops.rules"
    rules.write_text(OP_RULES)
    module, x = _model()
    paths = {mode: root / f"noisy_{mode}.pt2" for mode in ("train", "eval")}
    for mode, path in paths.items():
        export_and_save(copy.deepcopy(module), (x,), mode, path)
    return {"rules": rules, "paths": paths, "module": module, "x": x}


def _eager(exports, mode):
    module = copy.deepcopy(exports["module"])
    return module.train() if mode == "train" else module.eval()


def _nodes(path):
    """The node list, with the ArgumentKind of jitter's `train` dropped: exmode inserts it as
    a keyword (placed by its name on load), where torch's train export writes it positional."""
    nodes = node_list(read_program(path), canonical_names=True)
    for node in nodes:
        if node["target"].endswith(".jitter.default"):
            node["inputs"] = [(n, a, None if n == "train" else k) for n, a, k in node["inputs"]]
    return nodes


@pytest.mark.parametrize("source,target", [("eval", "train"), ("train", "eval")])
def test_cli_switch_is_torchs_export_and_eager(exports, tmp_path, source, target):
    out = tmp_path / "out.pt2"
    proc = run_ok(target, exports["paths"][source], "-o", out, "--rules", exports["rules"])
    assert "3 changes" in proc.stdout, proc.stdout
    assert "warning" not in proc.stdout
    assert _nodes(out) == _nodes(exports["paths"][target])
    assert_matches_eager(load_module(out), _eager(exports, target), exports["x"])
    # And back.
    back = tmp_path / "back.pt2"
    run_ok(source, out, "-o", back, "--rules", exports["rules"])
    assert _nodes(back) == _nodes(exports["paths"][source])
    assert_matches_eager(load_module(back), _eager(exports, source), exports["x"])


def test_without_rules_custom_ops_stay_as_exported(exports, tmp_path):
    out = tmp_path / "out.pt2"
    run_ok("train", exports["paths"]["eval"], "-o", out)
    loaded, eager = load_module(out), _eager(exports, "train")
    torch.manual_seed(5)
    expected = eager(exports["x"])
    torch.manual_seed(5)
    assert not torch.equal(loaded(exports["x"]), expected)


def test_inspect_lists_rule_sites(exports):
    plain = inspect_json(exports["paths"]["eval"])["programs"][0]
    assert plain["mode"] == "none" and plain["sites"] == []
    proc = run_ok("inspect", exports["paths"]["eval"], "--json", "--rules", exports["rules"])
    import json

    program = json.loads(proc.stdout)["programs"][0]
    assert program["mode"] == "eval"
    assert [s["op"] for s in program["sites"]] == [
        f"{LIB}.noisy.default", f"{LIB}.mix.default", f"{LIB}.jitter.default"]
    assert {s["mode"] for s in program["sites"]} == {"eval"}
    text = run_ok("inspect", exports["paths"]["train"], "--rules", exports["rules"]).stdout
    assert "mode train (3 sites)" in text, text


@pytest.mark.parametrize("form", ["path", "rules", "text", "list"])
def test_python_archive_rules(exports, tmp_path, form):
    rules = {
        "path": str(exports["rules"]),
        "rules": exmode.Rules(exports["rules"]),
        "text": exmode.Rules.from_text(OP_RULES, "ops"),
        "list": [exports["rules"]],
    }[form]
    archive = exmode.open(exports["paths"]["eval"], rules=rules)
    assert archive.mode == "eval"
    report = archive.train()[0]
    assert len(report["changes"]) == 3 and not report["warnings"]
    out = tmp_path / "out.pt2"
    archive.save(out)
    assert _nodes(out) == _nodes(exports["paths"]["train"])
    assert_matches_eager(load_module(out), _eager(exports, "train"), exports["x"])
    data = exmode.from_bytes(exports["paths"]["train"].read_bytes(), rules=rules)
    data.eval()
    (tmp_path / "e.pt2").write_bytes(data.to_bytes())
    assert_matches_eager(load_module(tmp_path / "e.pt2"), _eager(exports, "eval"), exports["x"])


@pytest.mark.parametrize("source", ["train", "eval"])
def test_exmode_torch_module_and_program(exports, source):
    target = "eval" if source == "train" else "train"
    ep = torch.export.load(str(exports["paths"][source]))
    m = ep.module()
    switch = et.move_exported_model_to_train if target == "train" else et.move_exported_model_to_eval
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ExmodeWarning: the switch is exact
        switch(m, rules=exports["rules"])
    assert_matches_eager(m, _eager(exports, target), exports["x"])
    # Later switches keep the module's rules.
    back = et.move_exported_model_to_eval if target == "train" else et.move_exported_model_to_train
    back(m)
    assert_matches_eager(m, _eager(exports, source), exports["x"])
    assert {s["mode"] for s in et.inspect(m)["sites"]} == {source}
    switched = (et.train if target == "train" else et.eval)(ep, rules=exmode.Rules(exports["rules"]))
    assert_matches_eager(switched.module(), _eager(exports, target), exports["x"])
    sites = et.inspect(switched, rules=exports["rules"])["sites"]
    assert [s["mode"] for s in sites] == [target] * 3


# ---------------------------------------------------------------- attention dropout


def _encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False), torch.randn(2, 5, 8)


class EagerAttention(nn.Module):
    """Attention as Hugging Face's eager_attention_forward writes it."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.attention_dropout = 0.1

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        w = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1)
        w = F.dropout(w, p=0.0 if not self.training else self.attention_dropout, training=self.training)
        return w @ v


class EagerLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = EagerAttention()
        self.dropout = nn.Dropout(0.2)

    def forward(self, x):
        return x + self.dropout(self.attention(x))


class EagerEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList([EagerLayer(), EagerLayer()])

    def forward(self, x):
        for layer in self.layer:
            x = layer(x)
        return x


def _eager_encoder():
    torch.manual_seed(0)
    return EagerEncoder(), torch.randn(2, 5, 8)


ATTENTION_CASES = {
    "sdpa": (_encoder, "attention_dropout layers.*.self_attn p=0.1\n"),
    "eager": (_eager_encoder, "attention_dropout layer.*.attention p=0.1\n"),
}


@pytest.mark.parametrize("case", sorted(ATTENTION_CASES))
def test_attention_rule_makes_eval_to_train_exact(tmp_path, case):
    factory, text = ATTENTION_CASES[case]
    module, x = factory()
    paths = {}
    for mode in ("train", "eval"):
        paths[mode] = tmp_path / f"{mode}.pt2"
        export_and_save(copy.deepcopy(module), (x,), mode, paths[mode])
    rules = tmp_path / "attention.rules"
    rules.write_text(text)
    # Without the rule: warned, and not torch's train export.
    plain = tmp_path / "plain.pt2"
    proc = run_ok("train", paths["eval"], "-o", plain)
    assert "unrecorded" in proc.stdout, proc.stdout
    assert node_list(read_program(plain), True) != node_list(read_program(paths["train"]), True)
    # With it: exact, so --strict passes and the program is torch's train export.
    out = tmp_path / "out.pt2"
    proc = run_ok("train", paths["eval"], "-o", out, "--rules", rules, "--strict")
    assert "warning" not in proc.stdout, proc.stdout
    assert node_list(read_program(out), True) == node_list(read_program(paths["train"]), True)
    eager = copy.deepcopy(module).train()
    assert_matches_eager(load_module(out), eager, x)
    # The same through exmode.torch on the eval export's module.
    m = torch.export.load(str(paths["eval"])).module()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        et.move_exported_model_to_train(m, rules=rules, strict=True)
    assert_matches_eager(m, copy.deepcopy(module).train(), x)
    # And back to eval, then train again, without the rules: what the switch wrote is kept.
    again = tmp_path / "again.pt2"
    run_ok("eval", out, "-o", again)
    run_ok("train", again, "-o", again.with_suffix(".2.pt2"), "--strict")
    assert node_list(read_program(again.with_suffix(".2.pt2")), True) == node_list(
        read_program(paths["train"]), True)


class DropPath(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training:
            return x
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * mask.div_(1 - self.p)


class DropPathBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Linear(8, 8)
        self.drop_path = DropPath(0.2)

    def forward(self, x):
        return x + self.drop_path(self.mlp(x))


def test_rules_do_not_silence_an_unrecoverable_drop_path(tmp_path):
    # An eval export keeps no node of the drop path: no rule can put it back exactly, so the
    # listed type's warning stays whatever rules are given.
    torch.manual_seed(0)
    path = tmp_path / "eval.pt2"
    export_and_save(DropPathBlock(), (torch.randn(2, 8),), "eval", path)
    types = tmp_path / "types.txt"
    types.write_text(f"{DropPathBlock.__module__}.DropPathBlock  drop-path  test  holds a drop path\n")
    rules = tmp_path / "r.rules"
    rules.write_text("attention_dropout ** p=0.2\n")
    proc = run_exmode("train", path, "-o", tmp_path / "out.pt2", "--module-types", types,
                      "--rules", rules, "--strict")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert not (tmp_path / "out.pt2").exists()


# ---------------------------------------------------------------- malformed rule files

MALFORMED = [
    ("unknown keyword", "# ok\nswap mylib.x.default train train=True eval=False\n", 2,
     "unknown keyword 'swap'"),
    ("bad target", "op mylib.x train train=True eval=False\n", 1, "'mylib.x' is not an op target"),
    ("built-in target", "\nop aten.dropout.default train train=True eval=False\n", 2,
     "aten.dropout.default is switched by exmode's built-in dropout pass"),
    ("bad literal", "op mylib.x.default train train=yes eval=False\n", 1, "'yes' is not a literal"),
    ("missing field", "op mylib.x.default train train=True\n", 1, "missing eval=<literal>"),
    ("missing p", "attention_dropout encoder.*\n", 1, "missing p=<float>"),
    ("bad p", "attention_dropout encoder.* p=2\n", 1, "p=2 is not in (0, 1]"),
    ("duplicate", "op mylib.x.default train train=True eval=False\n\n"
                  "op mylib::x mode train=1 eval=0\n", 3,
     "a second rule for mylib.x.default (the first is at"),
    ("drop path", "drop_path blocks.* p=0.1\n", 1, "drop_path rules are not supported"),
]


@pytest.mark.parametrize("name,text,line,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_rule_file(exports, tmp_path, name, text, line, message):
    rules = tmp_path / "bad.rules"
    rules.write_text(text)
    source = exports["paths"]["eval"]
    before = file_sha256(source)
    for args in (("train", source, "-o", tmp_path / "out.pt2"), ("inspect", source)):
        proc = run_exmode(*args, "--rules", rules)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert f"{rules}:{line}: {message}" in lines[0], lines[0]
        assert proc.stdout == ""
    assert not (tmp_path / "out.pt2").exists()
    assert file_sha256(source) == before
    with pytest.raises(exmode.UsageError, match=f"bad.rules:{line}: "):
        exmode.open(source, rules=rules)
    with pytest.raises(exmode.UsageError, match=f"<text>:{line}: "):
        exmode.Rules.from_text(text, "<text>")


def test_unreadable_rule_file(exports, tmp_path):
    missing = tmp_path / "missing.rules"
    proc = run_exmode("train", exports["paths"]["eval"], "-o", tmp_path / "out.pt2", "--rules", missing)
    assert proc.returncode == 2, proc.stderr
    assert f"{missing}: cannot read the rule file" in proc.stderr
    assert not (tmp_path / "out.pt2").exists()
    with pytest.raises(exmode.UsageError, match="cannot read the rule file"):
        exmode.Rules(missing)
    with pytest.raises(TypeError):
        exmode.open(exports["paths"]["eval"], rules=[42])


def test_a_value_neither_rule_mode_is_refused(exports, tmp_path):
    rules = tmp_path / "odd.rules"
    rules.write_text(f'op {LIB}::mix mode train="fit" eval="predict"\n')
    proc = run_exmode("train", exports["paths"]["eval"], "-o", tmp_path / "out.pt2", "--rules", rules)
    assert proc.returncode == 5, proc.stderr
    assert "neither the train value" in proc.stderr and f"{rules}:1" in proc.stderr
    assert not (tmp_path / "out.pt2").exists()
