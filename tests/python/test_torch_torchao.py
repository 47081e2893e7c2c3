"""exmode.torch against torchao.quantization.pt2e's functions of the same names.

Three parts:

1. torchao's own tests of move_exported_model_to_eval/train and
   allow_exported_model_train_eval (test/quantization/pt2e/test_quantize_pt2e.py),
   re-expressed for exmode.torch.
2. exmode and torchao side by side, eager PyTorch the oracle: where both are right they
   give the same graph; where torchao is wrong (custom dropout p, custom batch-norm
   momentum/eps, num_batches_tracked in eval, Dropout2d, batch norm without running
   statistics) exmode matches eager; decomposed programs (torchao silently does nothing,
   exmode refuses).
3. A QAT flow end to end (export, prepare_qat_pt2e, train steps, eval, convert_pt2e) with
   exmode's switching, compared with torchao's where both are right and with eager PyTorch
   for a plain exported model.

The eager module is deep-copied before every export: the exported module shares its
tensors with the module it was exported from.
"""

import contextlib
import copy
import logging
import warnings

import pytest
import torch
import torch.nn.functional as F

# torchao logs failed loads of its optional CUDA kernels at import.
logging.getLogger("torchao").setLevel(logging.ERROR)

# requirements-test.txt pins torchao: its absence is a failed set-up, not a skip.
import torchao  # noqa: E402
import torchao.quantization.pt2e as ao  # noqa: E402
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e  # noqa: E402
from torchao.testing.pt2e._xnnpack_quantizer import (  # noqa: E402
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)

import exmode  # noqa: E402
import exmode.torch as et  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:XNNPACKQuantizer is deprecated"),
    pytest.mark.filterwarnings("ignore:must run observer before calling calculate_qparams"),
    # torch's own deprecation, raised while GraphModules are copied
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

DROPOUT = torch.ops.aten.dropout.default
DROPOUT_ = torch.ops.aten.dropout_.default
FEATURE_DROPOUT = torch.ops.aten.feature_dropout.default
BATCH_NORM = torch.ops.aten.batch_norm.default
ADD_ = torch.ops.aten.add_.Tensor


# ---------------------------------------------------------------- torchao's pattern exports

# torchao builds its match and replacement patterns by exporting small functions on every
# call: 4 exports per move_exported_model_to_eval/train, 96 per convert_pt2e of a graph with
# a batch norm (about 20 s here). The same function (code and closure) exported on inputs of
# the same shapes gives the same graph, so this file keeps each one once and hands torchao a
# deep copy: what torchao matches and replaces is unchanged, only faster.
_PATTERN_CACHE = {}


def _shape_key(v):
    if isinstance(v, torch.Tensor):
        return ("tensor", tuple(v.shape), v.dtype, v.device.type, v.requires_grad)
    return v


def _pattern_key(pattern, example_inputs, is_cuda, kwargs):
    fn = pattern
    if isinstance(pattern, torch.nn.Module):
        if type(pattern).__name__ != "WrapperModule" or any(True for _ in pattern.parameters()):
            return None
        fn = pattern.fn
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    try:
        key = (code, tuple(c.cell_contents for c in fn.__closure__ or ()), fn.__defaults__,
               tuple(sorted((fn.__kwdefaults__ or {}).items())),
               tuple(_shape_key(a) for a in example_inputs), bool(is_cuda),
               tuple(sorted((k, _shape_key(v)) for k, v in kwargs.items())))
        hash(key)
    except (TypeError, ValueError):
        return None
    return key


@pytest.fixture(scope="module", autouse=True)
def _cached_torchao_patterns():
    import torchao.quantization.pt2e.qat_utils as qat_utils
    import torchao.quantization.pt2e.utils as pt2e_utils

    original = pt2e_utils._get_aten_graph_module_for_pattern

    def cached(pattern, example_inputs, is_cuda=False, **kwargs):
        key = _pattern_key(pattern, example_inputs, is_cuda, kwargs)
        if key is None:
            return original(pattern, example_inputs, is_cuda, **kwargs)
        if key not in _PATTERN_CACHE:
            _PATTERN_CACHE[key] = original(pattern, example_inputs, is_cuda, **kwargs)
        return copy.deepcopy(_PATTERN_CACHE[key])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pt2e_utils, "_get_aten_graph_module_for_pattern", cached)
        mp.setattr(qat_utils, "_get_aten_graph_module_for_pattern", cached)
        yield


# ---------------------------------------------------------------- helpers


def nodes_of(gm, target):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == target]


def the_node(gm, target):
    found = nodes_of(gm, target)
    assert len(found) == 1, f"expected one {target} node, found {len(found)}:\n{gm.graph}"
    return found[0]


def counter_increments(gm):
    """The aten.add_(<...>.num_batches_tracked, 1) nodes of the graph."""
    return [n for n in nodes_of(gm, ADD_)
            if isinstance(n.args[0], torch.fx.Node) and n.args[0].op == "get_attr"
            and str(n.args[0].target).endswith("num_batches_tracked") and n.args[1] == 1]


def signature(gm):
    """[(op, target, args, kwargs)] of the graph's call_function nodes, node arguments
    written as what they are (a state or input name, or the position of the call node), so
    that graphs differing only in node names compare equal."""
    calls = [n for n in gm.graph.nodes if n.op == "call_function"]
    position = {n: i for i, n in enumerate(calls)}

    def lit(a):
        if isinstance(a, torch.fx.Node):
            if a in position:
                return f"#{position[a]}"
            return f"{a.op}:{a.target}"
        if isinstance(a, (list, tuple)):
            return type(a)(lit(x) for x in a)
        if isinstance(a, dict):
            return {k: lit(v) for k, v in a.items()}
        return a

    return [(n.op, str(n.target), lit(n.args), lit(dict(n.kwargs))) for n in calls]


def export_module(model, x):
    """ep.module() of a deep copy of `model` (in the mode `model` is in)."""
    return torch.export.export(copy.deepcopy(model), (x,)).module()


def run(module, x, seed):
    torch.manual_seed(seed)
    return module(x.clone())


def buffers(module):
    return {k: v.clone() for k, v in module.named_buffers()}


def assert_same_buffers(actual, expected, context=""):
    a, e = dict(actual.named_buffers()), dict(expected.named_buffers())
    assert set(a) == set(e), f"{context}buffer names differ: {sorted(a)} vs {sorted(e)}"
    for name in e:
        assert torch.equal(a[name], e[name]), (
            f"{context}buffer {name} differs: {a[name].flatten()[:6]} vs {e[name].flatten()[:6]}")


def assert_same_params(actual, expected, context=""):
    a, e = dict(actual.named_parameters()), dict(expected.named_parameters())
    assert set(a) == set(e), f"{context}parameter names differ: {sorted(a)} vs {sorted(e)}"
    for name in e:
        assert torch.equal(a[name], e[name]), f"{context}parameter {name} differs"


def training_flags(gm):
    return {name or "<root>": m.training for name, m in gm.named_modules()}


def assert_training(gm, training):
    flags = training_flags(gm)
    assert all(v is training for v in flags.values()), f"expected training={training}: {flags}"


@contextlib.contextmanager
def quiet_exmode():
    """Ignores ExmodeWarning: exmode warns unused-state for the fake-quantize modules of a
    prepared model (see test_prepared_qat_model_switches_without_warnings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", et.ExmodeWarning)
        yield


class Wrap(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


class BatchNormDropout(torch.nn.Module):
    """The model of torchao's test_allow_exported_model_train_eval."""

    def __init__(self, p=0.5, momentum=0.1, eps=1e-5):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(3, momentum=momentum, eps=eps)
        self.dropout = torch.nn.Dropout(p)

    def forward(self, x):
        return self.dropout(self.bn(x))


class ConvBnRelu(torch.nn.Module):
    """TestHelperModules.ConvWithBNRelu(relu=True) of torchao's tests."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3)
        self.bn = torch.nn.BatchNorm2d(3)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Net(torch.nn.Module):
    """conv-bn-relu-dropout-linear, small: the QAT model."""

    def __init__(self, p=0.5, momentum=0.1, eps=1e-5):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4, momentum=momentum, eps=eps)
        self.relu = torch.nn.ReLU()
        self.drop = torch.nn.Dropout(p)
        self.fc = torch.nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(torch.flatten(x, 1)))


def qat_quantizer():
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_qat=True))


def images(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, 6, generator=g), torch.randint(0, 5, (n,), generator=g)


# ---------------------------------------------------------------- 1. torchao's tests, for exmode


@pytest.mark.parametrize("inplace", [False, True], ids=["out_of_place", "inplace"])
def test_move_exported_model_dropout(inplace):
    torch.manual_seed(0)
    x = torch.randn(64)
    m = export_module(Wrap(torch.nn.Dropout(0.5, inplace=inplace)).train(), x)
    target = DROPOUT_ if inplace else DROPOUT

    node = the_node(m, target)
    assert node.args[1:] == (0.5, True)

    assert et.move_exported_model_to_eval(m) is m
    node = the_node(m, target)
    assert node.args[1:] == (0.5, False)
    assert_training(m, False)
    assert torch.equal(run(m, x, 1), x), "dropout in eval mode is the identity"

    assert et.move_exported_model_to_train(m) is m
    node = the_node(m, target)
    assert node.args[1:] == (0.5, True)
    assert_training(m, True)
    assert not torch.equal(run(m, torch.ones(64), 1), torch.ones(64)), "train mode drops"


def test_move_exported_model_bn():
    torch.manual_seed(0)
    m = export_module(Wrap(torch.nn.BatchNorm2d(3)).train(), torch.randn(1, 3, 3, 3))

    assert the_node(m, BATCH_NORM).args[5] is True
    assert len(counter_increments(m)) == 1

    assert et.move_exported_model_to_eval(m) is m
    assert the_node(m, BATCH_NORM).args[5] is False
    assert counter_increments(m) == [], f"eval mode does not count batches:\n{m.graph}"
    assert_training(m, False)

    assert et.move_exported_model_to_train(m) is m
    bn = the_node(m, BATCH_NORM)
    assert bn.args[5] is True
    (inc,) = counter_increments(m)
    order = list(m.graph.nodes)
    assert order.index(inc) < order.index(bn), "the increment precedes the batch norm"
    assert_training(m, True)


def test_disallow_eval_train():
    torch.manual_seed(0)
    model = ConvBnRelu()
    x = torch.rand(3, 3, 5, 5)

    # Before export: fine.
    model.eval()
    model.train()

    m = export_module(model, x)
    for call in (m.eval, m.train):
        with pytest.raises(NotImplementedError):
            call()

    m = prepare_qat_pt2e(m, XNNPACKQuantizer())
    for call in (m.eval, m.train):
        with pytest.raises(NotImplementedError):
            call()

    m = convert_pt2e(m)
    for call in (m.eval, m.train):
        with pytest.raises(NotImplementedError):
            call()


def _assert_bn_dropout_mode(m, train):
    assert the_node(m, BATCH_NORM).args[5] is train
    assert the_node(m, DROPOUT).args[2] is train
    assert m.training is train
    assert_training(m, train)


def _check_allowed_switches(m, x):
    """m.eval(), m.train(), m.train(False) switch the graph and return m."""
    assert et.allow_exported_model_train_eval(m) is m
    assert m.training is True, "the module is in train mode (its export's)"
    assert m.eval() is m
    _assert_bn_dropout_mode(m, train=False)
    out = m(x)
    assert torch.equal(m(x), out), "eval is deterministic"
    assert m.train() is m
    _assert_bn_dropout_mode(m, train=True)
    assert m.train(False) is m
    _assert_bn_dropout_mode(m, train=False)
    assert m.train(True) is m
    _assert_bn_dropout_mode(m, train=True)
    m(x)


def test_allow_exported_model_train_eval():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 3, 3)
    m = export_module(BatchNormDropout().train(), x)

    for call in (m.eval, m.train):
        with pytest.raises(NotImplementedError):
            call()
    _check_allowed_switches(m, x)

    # prepare_qat_pt2e disallows train/eval again; allowing again makes them switch.
    m = prepare_qat_pt2e(m, XNNPACKQuantizer())
    for call in (m.eval, m.train):
        with pytest.raises(NotImplementedError):
            call()
    _check_allowed_switches(m, x)

    m = convert_pt2e(m, fold_quantize=True)
    for call in (m.eval, m.train):
        with pytest.raises(NotImplementedError):
            call()
    _check_allowed_switches(m, x)


def test_allow_exported_model_train_eval_idempotent():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 3, 3)
    m = export_module(Wrap(torch.nn.BatchNorm2d(3)).train(), x)
    et.allow_exported_model_train_eval(m)

    def snapshot():
        return m.graph, list(m.graph.nodes), signature(m), type(m).forward

    # train -> train (the export's mode): nothing changes, not even the generated code.
    graph, nodes, sig, forward = snapshot()
    code = m.code
    assert m.train() is m
    assert m.graph is graph and list(m.graph.nodes) == nodes and signature(m) == sig
    assert type(m).forward is forward and m.code == code
    assert m.training is True

    # train -> eval changes the graph.
    m.eval()
    eval_sig = signature(m)
    assert eval_sig != sig
    assert the_node(m, BATCH_NORM).args[5] is False

    # eval -> eval: nothing changes.
    graph, nodes, _, _ = snapshot()
    m(x)  # generates the eval code
    forward, code = type(m).forward, m.code
    for call in (m.eval, lambda: m.train(False), lambda: et.move_exported_model_to_eval(m)):
        assert call() is m
        assert m.graph is graph and list(m.graph.nodes) == nodes and signature(m) == eval_sig
        assert type(m).forward is forward and m.code == code
        assert m.training is False

    # and back: the train graph as exported.
    m.train()
    assert signature(m) == sig
    assert et.move_exported_model_to_train(m) is m
    assert signature(m) == sig


def test_allow_reports_the_exported_mode():
    """ep.module() says training=True whatever the export's mode; once allowed, `training`
    is the graph's mode, and the first switch to that mode is a no-op."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 3, 3)
    model = BatchNormDropout(p=0.3).eval()
    m = export_module(model, x)
    assert m.training is True  # torch's default, not the truth
    sig, graph = signature(m), m.graph
    et.allow_exported_model_train_eval(m)
    assert_training(m, False)
    assert m.eval() is m and m.graph is graph and signature(m) == sig
    m.train()
    assert_training(m, True)
    assert the_node(m, DROPOUT).args[1:] == (0.3, True)
    eager = copy.deepcopy(model).train()
    assert torch.equal(run(m, x, 2), run(eager, x, 2))
    assert_same_buffers(m, eager)


def test_move_functions_idempotent():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    model = BatchNormDropout(p=0.3).train()
    m = export_module(model, x)
    train_sig = signature(m)
    et.move_exported_model_to_eval(m)
    eval_sig, graph = signature(m), m.graph
    before = buffers(m)
    et.move_exported_model_to_eval(m)
    assert m.graph is graph and signature(m) == eval_sig
    eager = copy.deepcopy(model).eval()
    for seed in (1, 2):
        assert torch.equal(run(m, x, seed), run(eager, x, seed))
    for k, v in buffers(m).items():
        assert torch.equal(v, before[k]), f"eval forward changed {k}"
    et.move_exported_model_to_train(m)
    et.move_exported_model_to_train(m)
    assert signature(m) == train_sig


# ---------------------------------------------------------------- 2. side by side with torchao


def test_same_graph_when_both_are_right():
    """Dropout with torchao's own p=0.5 and batch norm with its defaults: train -> eval of a
    dropout gives torch's own eval export; train -> eval -> train gives the train export."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    drop = Wrap(torch.nn.Dropout(0.5)).train()
    torch_eval = signature(export_module(copy.deepcopy(drop).eval(), x))
    ours, theirs = export_module(drop, x), export_module(drop, x)
    et.move_exported_model_to_eval(ours)
    ao.move_exported_model_to_eval(theirs)
    assert signature(ours) == signature(theirs) == torch_eval
    assert torch.equal(run(ours, x, 3), run(theirs, x, 3))
    assert torch.equal(run(ours, x, 3), x)

    model = BatchNormDropout().train()
    ours, theirs = export_module(model, x), export_module(model, x)
    exported = signature(ours)
    for to_eval, to_train, m in ((et.move_exported_model_to_eval, et.move_exported_model_to_train, ours),
                                 (ao.move_exported_model_to_eval, ao.move_exported_model_to_train, theirs)):
        to_eval(m)
        to_train(m)
    assert signature(ours) == signature(theirs) == exported
    eager = copy.deepcopy(model)
    expected = run(eager, x, 4)
    assert torch.equal(run(ours, x, 4), expected)
    assert torch.equal(run(theirs, x, 4), expected)
    assert_same_buffers(ours, eager)
    assert_same_buffers(theirs, eager)


@pytest.mark.parametrize("exported_in", ["train", "eval"])
def test_custom_dropout_p_back_in_train(exported_in):
    """Dropout(0.2): exmode keeps p; torchao's replacement pattern resets it to 0.5."""
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    model = Wrap(torch.nn.Dropout(0.2)).train(exported_in == "train")
    ours, theirs = export_module(model, x), export_module(model, x)
    if exported_in == "train":
        et.move_exported_model_to_eval(ours)
        ao.move_exported_model_to_eval(theirs)
        assert the_node(ours, DROPOUT).args[1:] == (0.2, False)
        assert torch.equal(run(ours, x, 0), x)
    et.move_exported_model_to_train(ours)
    ao.move_exported_model_to_train(theirs)
    assert the_node(ours, DROPOUT).args[1:] == (0.2, True)
    assert the_node(theirs, DROPOUT).args[1:] == (0.5, True), "torchao resets p"

    eager = copy.deepcopy(model).train()
    expected = run(eager, x, 5)
    assert torch.equal(run(ours, x, 5), expected)
    assert not torch.equal(run(theirs, x, 5), expected)
    # Dropout(0.2) keeps about 80% of the 512 elements; torchao's about 50%.
    ones = torch.ones_like(x)
    assert 0.7 < (run(ours, ones, 6) != 0).float().mean().item() < 0.9
    assert 0.38 < (run(theirs, ones, 6) != 0).float().mean().item() < 0.62


def test_bn_custom_momentum_and_eps():
    """BatchNorm2d(momentum=0.3, eps=1e-3): torchao's patterns replace both with the
    defaults (eps in eval, momentum and eps back in train); exmode keeps them."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 4, 4) * 0.03  # small variance: eps matters
    model = Wrap(torch.nn.BatchNorm2d(3, momentum=0.3, eps=1e-3)).train()
    eager = copy.deepcopy(model)
    with torch.no_grad():  # running statistics of data with a small variance
        eager.layer.running_mean.copy_(torch.tensor([0.01, -0.02, 0.0]))
        eager.layer.running_var.copy_(torch.tensor([1e-3, 2e-3, 5e-4]))
    ours, theirs = export_module(eager, x), export_module(eager, x)

    for m, fn in ((ours, et.move_exported_model_to_eval), (theirs, ao.move_exported_model_to_eval)):
        fn(m)
    eager.eval()
    assert the_node(ours, BATCH_NORM).args[5:8] == (False, 0.3, 1e-3)
    expected = run(eager, x, 0)
    assert torch.equal(run(ours, x, 0), expected)
    assert not torch.allclose(run(theirs, x, 0), expected, rtol=0.05), "torchao's eval uses eps 1e-5"
    assert_same_buffers(ours, eager)

    for m, fn in ((ours, et.move_exported_model_to_train), (theirs, ao.move_exported_model_to_train)):
        fn(m)
    eager.train()
    assert the_node(ours, BATCH_NORM).args[5:8] == (True, 0.3, 1e-3)
    assert the_node(theirs, BATCH_NORM).args[5:8] == (True, 0.1, 1e-5)
    expected = run(eager, x, 0)
    assert torch.equal(run(ours, x, 0), expected)
    assert_same_buffers(ours, eager)
    run(theirs, x, 0)
    assert not torch.allclose(theirs.layer.running_var, eager.layer.running_var), (
        "torchao's train uses momentum 0.1")


def test_num_batches_tracked_in_eval():
    """torchao keeps the counter's increment in eval mode; eager eval does not count."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 4, 4)
    model = BatchNormDropout(p=0.5).train()
    eager = copy.deepcopy(model)
    ours, theirs = export_module(model, x), export_module(model, x)
    et.move_exported_model_to_eval(ours)
    ao.move_exported_model_to_eval(theirs)
    eager.eval()
    for seed in (1, 2):
        expected = run(eager, x, seed)
        assert torch.equal(run(ours, x, seed), expected)
        assert torch.equal(run(theirs, x, seed), expected)
    assert eager.bn.num_batches_tracked.item() == 0
    assert_same_buffers(ours, eager)
    assert theirs.bn.num_batches_tracked.item() == 2, "torchao counts eval batches"

    et.move_exported_model_to_train(ours)
    eager.train()
    assert torch.equal(run(ours, x, 3), run(eager, x, 3))
    assert eager.bn.num_batches_tracked.item() == 1
    assert_same_buffers(ours, eager)


def test_num_batches_tracked_after_eval_export_to_train():
    """An eval export has no increment; exmode puts it in for train, torchao does not."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 4, 4)
    model = BatchNormDropout(p=0.5).eval()
    eager = copy.deepcopy(model).train()
    ours, theirs = export_module(model, x), export_module(model, x)
    assert counter_increments(ours) == []
    et.move_exported_model_to_train(ours)
    ao.move_exported_model_to_train(theirs)
    assert len(counter_increments(ours)) == 1
    for seed in (1, 2):
        expected = run(eager, x, seed)
        assert torch.equal(run(ours, x, seed), expected)
        assert torch.equal(run(theirs, x, seed), expected)
    assert_same_buffers(ours, eager)
    assert eager.bn.num_batches_tracked.item() == 2
    assert theirs.bn.num_batches_tracked.item() == 0, "torchao does not count train batches"


@pytest.mark.parametrize("exported_in", ["train", "eval"])
def test_dropout2d(exported_in):
    """nn.Dropout2d is aten.feature_dropout: torchao does not switch it, exmode does."""
    torch.manual_seed(0)
    x = torch.randn(4, 8, 3, 3)
    model = Wrap(torch.nn.Dropout2d(0.5)).train(exported_in == "train")
    ours, theirs = export_module(model, x), export_module(model, x)
    exported_sig = signature(theirs)
    flip = exported_in != "train"
    et.allow_exported_model_train_eval(ours)
    ao.allow_exported_model_train_eval(theirs)
    for m in (ours, theirs):
        m.train(flip)
    assert the_node(ours, FEATURE_DROPOUT).args[1:] == (0.5, flip)
    assert signature(theirs) == exported_sig, "torchao leaves feature_dropout as exported"

    eager = copy.deepcopy(model).train(flip)
    expected = run(eager, x, 7)
    assert torch.equal(run(ours, x, 7), expected)
    assert not torch.equal(run(theirs, x, 7), expected)

    ours.train(not flip)
    eager.train(not flip)
    assert torch.equal(run(ours, x, 8), run(eager, x, 8))


@pytest.mark.parametrize("exported_in", ["train", "eval"])
def test_bn_without_running_stats(exported_in):
    """BatchNorm2d(track_running_stats=False) normalizes by the batch in both modes. exmode
    leaves it as it is; torchao's eval sets training=False with no running statistics."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 4, 4)
    model = Wrap(torch.nn.BatchNorm2d(3, track_running_stats=False)).train(exported_in == "train")
    ours = export_module(model, x)
    exported_sig = signature(ours)
    eager = copy.deepcopy(model)
    et.allow_exported_model_train_eval(ours)
    for mode in (False, True, False):
        ours.train(mode)
        eager.train(mode)
        assert ours.training is mode
        assert signature(ours) == exported_sig
        assert torch.equal(run(ours, x, 0), run(eager, x, 0)), f"training={mode}"
        assert_same_buffers(ours, eager)

    theirs = export_module(model, x)
    ao.move_exported_model_to_eval(theirs)
    assert the_node(theirs, BATCH_NORM).args[3:6] == (None, None, False)
    with pytest.raises(RuntimeError, match="running_mean must be defined"):
        theirs(x)


def _decomposed_module():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    ep = torch.export.export(BatchNormDropout(p=0.3).train(), (x,)).run_decompositions()
    return ep, x


def test_decomposed_program_torchao_does_nothing():
    ep, x = _decomposed_module()
    m = ep.module()
    sig = signature(m)
    assert any("native_dropout" in t for _, t, _, _ in sig)
    ao.move_exported_model_to_eval(m)
    assert signature(m) == sig, "torchao's patterns do not match the functional IR"
    ao.move_exported_model_to_train(m)
    assert signature(m) == sig


def test_decomposed_program_exmode_refuses():
    ep, x = _decomposed_module()
    m = ep.module()
    sig, graph = signature(m), m.graph
    with pytest.raises(exmode.UnsupportedError) as info:
        et.move_exported_model_to_eval(m)
    message = str(info.value)
    print(message)
    assert "run_decompositions" in message
    assert "_native_batch_norm_legit_functional" in message or "native_dropout" in message
    assert info.value.exit_status == 5
    assert m.graph is graph and signature(m) == sig, "nothing changed"
    assert m.training is True

    # Already in the target mode: nothing to do, no error.
    assert et.move_exported_model_to_train(m) is m
    assert signature(m) == sig
    torch.manual_seed(0)
    eager = BatchNormDropout(p=0.3).train()
    assert torch.equal(run(m, x, 1), run(eager, x, 1)), "the refused module still runs"

    with pytest.raises(exmode.UnsupportedError, match="run_decompositions"):
        et.eval(ep)
    report = et.inspect(ep)
    assert report["mode"] == "train"
    assert {s["op"] for s in report["sites"]} == {
        "aten._native_batch_norm_legit_functional.default", "aten.native_dropout.default"}


def test_decomposed_program_refused_again():
    ep, _ = _decomposed_module()
    m = ep.module()
    with pytest.raises(exmode.UnsupportedError):
        et.move_exported_model_to_eval(m)
    # A training loop calling m.eval() every epoch: refused the same way each time.
    with pytest.raises(exmode.UnsupportedError, match="run_decompositions"):
        et.move_exported_model_to_eval(m)
    et.allow_exported_model_train_eval(m)
    with pytest.raises(exmode.UnsupportedError, match="run_decompositions"):
        m.eval()
    assert m.training is True


def test_decomposed_program_refused_by_allowed_eval():
    """The first m.eval() of an allowed decomposed module: the same refusal."""
    ep, _ = _decomposed_module()
    m = ep.module()
    sig = signature(m)
    et.allow_exported_model_train_eval(m)
    assert m.training is True
    with pytest.raises(exmode.UnsupportedError, match="run_decompositions"):
        m.eval()
    assert signature(m) == sig and m.training is True


def test_strict_refuses_a_warned_switch():
    """A random op outside any dropout keeps running in eval: a warning, or with strict=True
    an UnsupportedError before anything changes."""

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(x) + torch.rand_like(x)

    x = torch.randn(4, 4)
    m = export_module(Noisy().train(), x)
    sig = signature(m)
    with pytest.raises(exmode.UnsupportedError, match="strict"):
        et.move_exported_model_to_eval(m, strict=True)
    assert signature(m) == sig and m.training is True
    with pytest.warns(et.ExmodeWarning, match="random"):
        et.move_exported_model_to_eval(m)
    assert the_node(m, DROPOUT).args[2] is False and m.training is False


def test_exported_program_eval_train():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 4, 4)
    model = BatchNormDropout(p=0.2, momentum=0.3, eps=1e-3).train()
    ep = torch.export.export(copy.deepcopy(model), (x,))
    before = str(ep.graph)
    ep_eval = et.eval(ep)
    assert str(ep.graph) == before, "the program given is not changed"
    assert et.eval(ep_eval) is ep_eval
    assert et.inspect(ep_eval)["mode"] == "eval"
    eager = copy.deepcopy(model).eval()
    assert torch.equal(run(ep_eval.module(), x, 0), run(eager, x, 0))
    ep_train = et.train(ep_eval)
    assert et.inspect(ep_train)["mode"] == "train"
    eager.train()
    m = ep_train.module()
    assert torch.equal(run(m, x, 1), run(eager, x, 1))
    assert_same_buffers(m, eager)


# ---------------------------------------------------------------- 3. QAT end to end


def _prepared(model, x):
    m = export_module(model, x)
    return prepare_qat_pt2e(m, qat_quantizer())


def _train_steps(m, opt, x, y, seeds, between=None, returns_model=True):
    """SGD steps, m.train() before each; returns the losses. torchao's train() returns None,
    exmode's the model (as nn.Module.train does)."""
    losses = []
    for i, seed in enumerate(seeds):
        returned = m.train()
        assert returned is (m if returns_model else None)
        if returns_model:
            assert m.training is True
        torch.manual_seed(seed)
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        if between is not None:
            between(i)
    return losses


def test_qat_flow_exmode():
    torch.manual_seed(0)
    x, y = images(0)
    m = _prepared(Net(p=0.2).train(), x)
    bn_args = the_node(m, BATCH_NORM).args[5:]
    assert bn_args[0] is True
    params = list(m.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    keys = list(m.state_dict().keys())
    start = {k: v.clone() for k, v in m.named_parameters()}
    with quiet_exmode():
        et.allow_exported_model_train_eval(m)
        assert m.training is True
        eval_outputs = []

        def check(i):
            now = list(m.parameters())
            assert len(now) == len(params) and all(a is b for a, b in zip(now, params)), (
                "parameters are the same tensors")
            assert list(m.state_dict().keys()) == keys
            if i == 1:  # an evaluation in the middle of training
                m.eval()
                assert m.training is False
                eval_outputs.append(m(x))

        _train_steps(m, opt, x, y, seeds=range(10, 14), between=check)
        assert any(not torch.equal(v, start[k]) for k, v in m.named_parameters()), "it trained"
        assert the_node(m, DROPOUT).args[1:] == (0.2, True)
        assert the_node(m, BATCH_NORM).args[5:] == bn_args

        m.eval()
        assert_training(m, False)
        assert list(m.state_dict().keys()) == keys
        m.apply(ao.disable_observer)  # the fake-quantize parameters are fixed for evaluation
        state = buffers(m)
        out1, out2 = run(m, x, 1), run(m, x, 2)
        assert torch.equal(out1, out2), "eval is deterministic"
        after = buffers(m)
        for k in ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
            assert torch.equal(after[k], state[k]), f"eval forwards changed {k}"
        assert state["bn.num_batches_tracked"].item() == 4, "one count per training step"
        assert not torch.equal(eval_outputs[0], out1), "the steps after the mid-training eval count"

        converted = convert_pt2e(m, fold_quantize=True)
        et.move_exported_model_to_eval(converted)
    assert the_node(converted, DROPOUT).args[1:] == (0.2, False)
    q1, q2 = run(converted, x, 1), run(converted, x, 2)
    assert torch.equal(q1, q2)
    assert q1.shape == out1.shape
    # The converted model computes what the fake-quantized one simulated.
    assert torch.allclose(q1, out1, atol=0.1 * out1.abs().max().item()), (q1 - out1).abs().max()


def _qat_run(model, x, y, fns, returns_model):
    """The QAT flow with the (allow, move_to_eval) functions `fns`; returns what to compare."""
    allow, to_eval = fns
    m = _prepared(model, x)
    opt = torch.optim.SGD(list(m.parameters()), lr=0.1)
    allow(m)
    record = {"losses": []}

    def between(i):
        if i == 1:
            m.eval()
            record["mid_eval"] = run(m, x, 50)

    record["losses"] = _train_steps(m, opt, x, y, seeds=range(20, 24), between=between,
                                    returns_model=returns_model)
    m.eval()
    m.apply(ao.disable_observer)
    record["eval"] = [run(m, x, s) for s in (1, 2)]
    record["params"] = {k: v.detach().clone() for k, v in m.named_parameters()}
    record["buffers"] = buffers(m)
    converted = convert_pt2e(m, fold_quantize=True)
    to_eval(converted)
    record["converted"] = run(converted, x, 3)
    return record


def test_qat_flow_matches_torchao():
    """With torchao's own dropout p and batch-norm defaults both are right: the same
    losses, parameters, statistics and outputs, except torchao's eval counting batches."""
    torch.manual_seed(0)
    x, y = images(1)
    model = Net().train()
    with quiet_exmode():
        ours = _qat_run(copy.deepcopy(model), x, y,
                        (et.allow_exported_model_train_eval, et.move_exported_model_to_eval), True)
    theirs = _qat_run(copy.deepcopy(model), x, y,
                      (ao.allow_exported_model_train_eval, ao.move_exported_model_to_eval), False)
    for a, b in zip(ours["losses"], theirs["losses"]):
        assert torch.equal(a, b)
    assert torch.equal(ours["mid_eval"], theirs["mid_eval"])
    for a, b in zip(ours["eval"], theirs["eval"]):
        assert torch.equal(a, b)
    assert torch.equal(ours["eval"][0], ours["eval"][1])
    assert set(ours["params"]) == set(theirs["params"])
    for k in ours["params"]:
        assert torch.equal(ours["params"][k], theirs["params"][k]), k
    assert set(ours["buffers"]) == set(theirs["buffers"])
    for k in ours["buffers"]:
        if k != "bn.num_batches_tracked":
            assert torch.equal(ours["buffers"][k], theirs["buffers"][k]), k
    # 4 training steps; torchao's eval also counts: the mid-training forward and the 2 at the end.
    assert ours["buffers"]["bn.num_batches_tracked"].item() == 4
    assert theirs["buffers"]["bn.num_batches_tracked"].item() == 7
    assert torch.equal(ours["converted"], theirs["converted"])


def test_training_matches_eager():
    """A plain exported model (custom p, momentum, eps) trained with exmode's switching
    gives eager PyTorch's parameters, statistics and outputs, step for step."""
    torch.manual_seed(0)
    x, y = images(2)
    model = Net(p=0.2, momentum=0.3, eps=1e-3).train()
    eager = copy.deepcopy(model)
    m = export_module(model, x)
    et.allow_exported_model_train_eval(m)
    opt_m = torch.optim.SGD(list(m.parameters()), lr=0.1, momentum=0.9)
    opt_e = torch.optim.SGD(list(eager.parameters()), lr=0.1, momentum=0.9)
    params = list(m.parameters())
    for step in range(4):
        for module, opt in ((m, opt_m), (eager, opt_e)):
            module.train()
            torch.manual_seed(100 + step)
            loss = F.cross_entropy(module(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert all(a is b for a, b in zip(m.parameters(), params))
        assert_same_params(m, eager, f"step {step}: ")
        assert_same_buffers(m, eager, f"step {step}: ")
        if step % 2 == 1:
            m.eval()
            eager.eval()
            assert torch.equal(run(m, x, 7), run(eager, x, 7)), f"eval after step {step}"
            assert_same_buffers(m, eager, f"eval after step {step}: ")
    assert eager.bn.num_batches_tracked.item() == 4


# ---------------------------------------------------------------- exmode's findings


def test_prepared_qat_model_switches_without_warnings():
    torch.manual_seed(0)
    x, _ = images(3)
    m = _prepared(Net().train(), x)
    assert any(n.op == "call_module" and n.target.startswith("activation_post_process")
               for n in m.graph.nodes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", et.ExmodeWarning)
        et.move_exported_model_to_eval(m, strict=True)
        et.move_exported_model_to_train(m, strict=True)
    assert the_node(m, DROPOUT).args[2] is True
