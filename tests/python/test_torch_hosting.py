"""exmode.torch on graphs that stress the FX host: a use rewired in one place of a node
that reads the value twice, torch.compile across toggles, rules given after the first call,
graphs calling graphs, module names the module-stack text cannot carry, odd metadata and
literals. Eager PyTorch is the oracle (exported copies: export shares tensors)."""

import copy
import warnings

import pytest
import torch
import torch.nn as nn
from torch.fx.passes.split_module import split_module

import exmode
import exmode.torch as et
from test_drop_path import Block, DropPath, hf_drop_path, timm_drop_path, tv_stochastic_depth
from test_drop_path import model as drop_path_model


def _same_run(a, b, x, seed):
    torch.manual_seed(seed)
    ya = a(x)
    torch.manual_seed(seed)
    yb = b(x)
    return torch.equal(ya, yb)


class SelfResidual(nn.Module):
    """h + drop_path(h): the consumer reads h twice, once through the drop path."""

    def __init__(self, fn, **kw):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.dp = DropPath(fn, **kw)

    def forward(self, x):
        h = self.conv(x)
        return h + self.dp(h)


DROP_PATHS = [(timm_drop_path, {"drop_prob": 0.2}), (hf_drop_path, {"drop_prob": 0.2}),
              (tv_stochastic_depth, {"p": 0.2, "mode": "row"})]


@pytest.mark.parametrize("fn,kw", DROP_PATHS, ids=lambda v: getattr(v, "__name__", ""))
def test_a_use_restored_in_one_place_of_a_node(fn, kw):
    x = torch.randn(4, 3, 6, 6)
    torch.manual_seed(0)
    model = SelfResidual(fn, **kw)
    ep = torch.export.export(copy.deepcopy(model).train(), (x,))
    back = et.train(et.eval(ep))
    assert _same_run(copy.deepcopy(model).train(), copy.deepcopy(back).module(), x, 2)
    m = et.allow_exported_model_train_eval(ep.module())
    eager = copy.deepcopy(model)
    for i, mode in enumerate(["eval", "train", "eval", "train"]):
        m.train(mode == "train")
        eager.train(mode == "train")
        assert _same_run(eager, m, x, 3 + i), mode
    # The residual add reads the convolution and the drop path, not the drop path twice.
    conv = next(n for n in m.graph.nodes if n.target == torch.ops.aten.conv2d.default)
    residual = [n for n in m.graph.nodes if n.target == torch.ops.aten.add.Tensor and conv in n.args]
    assert len(residual) == 1 and residual[0].args[0] is not residual[0].args[1]


class ConvBnDrop(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4, momentum=0.3)
        self.drop = nn.Dropout(0.4)

    def forward(self, x):
        return self.drop(torch.relu(self.bn(self.conv(x))))


def test_torch_compile_follows_the_toggles():
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(0)
    model = ConvBnDrop()
    m = et.allow_exported_model_train_eval(torch.export.export(copy.deepcopy(model), (x,)).module())
    eager = copy.deepcopy(model)
    compiled = torch.compile(m, backend="eager")
    for i, mode in enumerate(["train", "eval", "train", "eval", "train"]):
        m.train(mode == "train")
        eager.train(mode == "train")
        assert _same_run(eager, compiled, x, 10 + i), mode
        assert torch.equal(m.bn.num_batches_tracked, eager.bn.num_batches_tracked), mode


def test_rules_given_after_the_first_call_are_used(tmp_path):
    rules = tmp_path / "types.txt"
    rules.write_text(f"{Block.__module__}.{Block.__qualname__}  drop-path  tests  holds a drop path\n")
    x = torch.randn(4, 3, 6, 6)
    model = drop_path_model("hand").eval()
    m = torch.export.export(copy.deepcopy(model), (x,)).module()
    et.move_exported_model_to_eval(m)  # nothing to do, and no rules yet
    with pytest.raises(exmode.UnsupportedError):
        et.move_exported_model_to_train(m, strict=True, module_types=[str(rules)])
    with pytest.warns(et.ExmodeWarning, match="drop path"):
        et.move_exported_model_to_train(m, module_types=[str(rules)])


def test_a_graph_calling_graphs_is_refused():
    x = torch.randn(2, 3, 8, 8)
    m = torch.export.export(ConvBnDrop().train(), (x,)).module()
    order = {}

    def part(node):
        return order.setdefault(node.name, 0 if len(order) < 6 else 1)

    split = split_module(m, m, part)
    with pytest.raises(exmode.UnsupportedError, match="nested graph"):
        et.move_exported_model_to_eval(split)


def test_module_names_the_stack_text_cannot_carry():
    x = torch.randn(2, 4)
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("b;n", nn.BatchNorm1d(4))
    model.add_module("d,o", nn.Dropout(0.3))
    m = et.allow_exported_model_train_eval(torch.export.export(copy.deepcopy(model).eval(), (x,)).module())
    eager = copy.deepcopy(model)
    for i, mode in enumerate(["train", "eval", "train"]):
        m.train(mode == "train")
        eager.train(mode == "train")
        assert _same_run(eager, m, x, 20 + i), mode
    inserted = [n for n in m.graph.nodes if n.target == torch.ops.aten.add_.Tensor]
    assert inserted and "nn_module_stack" in inserted[0].meta


def test_odd_custom_metadata_and_huge_literals():
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(0)
    model = ConvBnDrop()
    m = torch.export.export(copy.deepcopy(model), (x,)).module()
    conv = next(n for n in m.graph.nodes if n.target == torch.ops.aten.conv2d.default)
    conv.meta["custom"] = {"tag": object(), 3: (1, 2)}
    assert et.inspect(m)["mode"] == "train"
    et.move_exported_model_to_eval(m)
    assert _same_run(copy.deepcopy(model).eval(), m, x, 1)
    assert conv.meta["custom"]["3" if "3" in conv.meta["custom"] else 3] == (1, 2)
