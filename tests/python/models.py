"""Small seeded modules that exercise every mode-sensitive op exmode switches.

Each factory returns ``(module, example_input)``. Construction is seeded, so calling a
factory twice gives identical modules. Batch norms get non-default affine parameters,
random running statistics and ``num_batches_tracked = 7`` before anything is exported,
so that a tool which resets or ignores them produces different numbers than eager
PyTorch. Dropout probabilities, momenta and eps values are deliberately not the
defaults (0.5, 0.1, 1e-5), so a tool that overwrites literals with defaults is caught.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_IN_TYPES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_DROPOUT_OPS = {
    nn.Dropout: "aten.dropout.default",
    nn.Dropout1d: "aten.feature_dropout.default",
    nn.Dropout2d: "aten.feature_dropout.default",
    nn.Dropout3d: "aten.feature_dropout.default",
    nn.AlphaDropout: "aten.alpha_dropout.default",
    nn.FeatureAlphaDropout: "aten.feature_alpha_dropout.default",
}


def _randomize_batch_norms(module, seed):
    """Gives every batch / instance norm in `module` random affine params and running stats."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if not isinstance(m, _BN_TYPES + _IN_TYPES):
                continue
            if m.affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
            if m.track_running_stats:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
    return module


def _finish(module, input_shape, seed):
    _randomize_batch_norms(module, seed + 1000)
    g = torch.Generator().manual_seed(seed + 2000)
    x = torch.randn(input_shape, generator=g) * 2 + 0.5
    return module, x


# ---------------------------------------------------------------- module classes


class AuxHead(nn.Module):
    """A classifier whose auxiliary head runs only in training (as Inception's does): its eval
    export does not read the head's parameters."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.25)
        self.head = nn.Linear(8, 3)
        self.aux = nn.Linear(8, 3)

    def forward(self, x):
        h = self.drop(torch.relu(self.body(x)))
        if self.training:
            return self.head(h) + self.aux(h)
        return self.head(h)


class FunctionalDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return F.dropout(self.fc(x), 0.2, self.training)


class BatchNormTwice(nn.Module):
    """One BatchNorm1d module called twice in one forward."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.bn = nn.BatchNorm1d(6, momentum=0.25, eps=1e-3)

    def forward(self, x):
        y = self.bn(x)
        y = torch.relu(self.fc(y))
        return self.bn(y)


class Inner(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c, momentum=0.2, eps=1e-4)
        self.drop = nn.Dropout2d(0.15)

    def forward(self, x):
        return self.drop(torch.relu(self.bn(self.conv(x))))


class Middle(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.seq = nn.Sequential(Inner(c), Inner(c))
        self.bn = nn.BatchNorm2d(c, momentum=0.35, eps=2e-3)

    def forward(self, x):
        return self.bn(self.seq(x))


class Nested(nn.Module):
    """Two levels of nesting: module paths like ``body.0.seq.1.bn``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 3, 1)
        self.body = nn.Sequential(Middle(3), Middle(3))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.35), nn.Linear(3 * 4 * 4, 2))

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, momentum=0.3, eps=1e-3)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=0.15, eps=1e-4)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout, momentum=0.05, eps=3e-5),
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class ResNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4, momentum=0.2, eps=1e-3)
        self.layer1 = nn.Sequential(BasicBlock(4, 4), BasicBlock(4, 4))
        self.layer2 = nn.Sequential(BasicBlock(4, 6, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.3)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))


class WithConstants(nn.Module):
    """Batch norm and dropout next to a non-persistent buffer and a lifted tensor constant,
    which the archive stores apart from the weights (data/constants)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.bn = nn.BatchNorm1d(6, momentum=0.3, eps=1e-3)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 6), persistent=False)
        self.offset = torch.linspace(-1.0, 1.0, 6)  # a plain tensor attribute: a lifted constant
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.drop(self.bn(self.fc(x)) * self.scale + self.offset)


class Attention(nn.Module):
    """nn.MultiheadAttention with attention dropout: scaled_dot_product_attention gets
    dropout_p=0.3 in train mode and 0.0 in eval mode."""

    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        return self.norm(x + self.mha(x, x, x, need_weights=False)[0])


# ---------------------------------------------------------------- factories


def mlp_dropout():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 4))
    return _finish(m, (4, 8), 1)


def conv_bn2d():
    torch.manual_seed(2)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.3, eps=1e-3), nn.ReLU())
    return _finish(m, (2, 3, 5, 5), 2)


def bn1d_nc():
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6, momentum=0.4, eps=1e-2))
    return _finish(m, (4, 5), 3)


def bn1d_ncl():
    torch.manual_seed(4)
    m = nn.BatchNorm1d(3, momentum=0.3, eps=1e-3)
    return _finish(m, (2, 3, 5), 4)


def bn3d():
    torch.manual_seed(5)
    m = nn.Sequential(nn.Conv3d(2, 2, 1), nn.BatchNorm3d(2, momentum=0.3, eps=1e-3))
    return _finish(m, (2, 2, 3, 3, 3), 5)


def bn_affine_false():
    torch.manual_seed(6)
    m = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, affine=False, momentum=0.3, eps=1e-3))
    return _finish(m, (2, 2, 4, 4), 6)


def bn_no_running_stats():
    torch.manual_seed(7)
    m = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, track_running_stats=False, momentum=0.3, eps=1e-3))
    return _finish(m, (2, 2, 4, 4), 7)


def bn_no_running_stats_dropout():
    torch.manual_seed(8)
    m = nn.Sequential(
        nn.Linear(5, 6), nn.BatchNorm1d(6, track_running_stats=False, eps=1e-3), nn.Dropout(0.4), nn.Linear(6, 2)
    )
    return _finish(m, (4, 5), 8)


def dropout_inplace():
    torch.manual_seed(9)
    m = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.3, inplace=True), nn.Linear(8, 3))
    return _finish(m, (4, 8), 9)


def functional_dropout():
    torch.manual_seed(10)
    return _finish(FunctionalDropout(), (4, 8), 10)


def nested():
    torch.manual_seed(11)
    return _finish(Nested(), (2, 2, 4, 4), 11)


def bn_twice():
    torch.manual_seed(12)
    return _finish(BatchNormTwice(), (4, 6), 12)


def resnetish():
    torch.manual_seed(13)
    return _finish(ResNetish(), (2, 3, 6, 6), 13)


def dropout1d():
    torch.manual_seed(14)
    m = nn.Sequential(nn.Conv1d(3, 6, 1), nn.Dropout1d(0.3))
    return _finish(m, (2, 3, 5), 14)


def dropout2d():
    torch.manual_seed(15)
    m = nn.Sequential(nn.Conv2d(3, 6, 1), nn.Dropout2d(0.3))
    return _finish(m, (2, 3, 4, 4), 15)


def dropout3d():
    torch.manual_seed(16)
    m = nn.Sequential(nn.Conv3d(2, 6, 1), nn.Dropout3d(0.3))
    return _finish(m, (2, 2, 3, 3, 3), 16)


def alpha_dropout():
    torch.manual_seed(17)
    m = nn.Sequential(nn.Linear(8, 8), nn.SELU(), nn.AlphaDropout(0.3), nn.Linear(8, 3))
    return _finish(m, (4, 8), 17)


def feature_alpha_dropout():
    torch.manual_seed(18)
    m = nn.Sequential(nn.Conv2d(3, 6, 1), nn.SELU(), nn.FeatureAlphaDropout(0.3))
    return _finish(m, (2, 3, 4, 4), 18)


def with_constants():
    torch.manual_seed(19)
    return _finish(WithConstants(), (4, 5), 19)


def instance_norm_stats():
    torch.manual_seed(20)
    m = nn.Sequential(nn.Conv2d(3, 4, 1),
                      nn.InstanceNorm2d(4, affine=True, track_running_stats=True, momentum=0.3, eps=1e-3))
    return _finish(m, (2, 3, 4, 4), 20)


def instance_norm_no_stats():
    torch.manual_seed(21)
    m = nn.Sequential(nn.Conv1d(3, 4, 1), nn.InstanceNorm1d(4, affine=True, momentum=0.3, eps=1e-3))
    return _finish(m, (2, 3, 5), 21)


def rrelu():
    torch.manual_seed(22)
    m = nn.Sequential(nn.Linear(6, 6), nn.RReLU(0.1, 0.3), nn.Linear(6, 2))
    return _finish(m, (4, 6), 22)


def attention():
    torch.manual_seed(23)
    return _finish(Attention(), (2, 5, 8), 23)


MODELS = {
    f.__name__: f
    for f in [
        mlp_dropout,
        conv_bn2d,
        bn1d_nc,
        bn1d_ncl,
        bn3d,
        bn_affine_false,
        bn_no_running_stats,
        bn_no_running_stats_dropout,
        dropout_inplace,
        functional_dropout,
        nested,
        bn_twice,
        resnetish,
        dropout1d,
        dropout2d,
        dropout3d,
        alpha_dropout,
        feature_alpha_dropout,
        with_constants,
        instance_norm_stats,
        instance_norm_no_stats,
        rrelu,
    ]
}

# Models the numerical and round-trip tests cover but whose inspect output is not
# specified here (attention dropout lives inside scaled_dot_product_attention).
EXTRA_MODELS = {f.__name__: f for f in [attention]}
ALL_MODELS = {**MODELS, **EXTRA_MODELS}

# (model, export mode, target mode) combinations that cannot be exact: an eval-mode
# export of nn.MultiheadAttention passes dropout_p=0.0 and does not record the module's
# p, so a switch to train cannot restore attention dropout (exmode says so in a note).
INEXACT = {("attention", "eval", "train")}

# Models whose only mode-sensitive sites are batch norms without running stats: train and
# eval behave identically, and the program has no switchable site.
MODE_INSENSITIVE = {"bn_no_running_stats", "instance_norm_no_stats"}


def expected_sites(module):
    """The sites exmode should report for `module`, derived from the eager module alone.

    Returns a list of dicts with keys op, module, fixed, and p or momentum/eps (none for
    rrelu, whose lower/upper bounds do not change with the mode). A module
    called twice contributes one site per call; functional dropout is listed by hand.
    """
    sites = []
    calls = {"BatchNormTwice": {"bn": 2}}.get(type(module).__name__, {})
    for path, m in module.named_modules():
        n = calls.get(path, 1)
        if isinstance(m, _BN_TYPES):
            site = {"op": "aten.batch_norm.default", "module": path, "fixed": not m.track_running_stats,
                    "momentum": m.momentum, "eps": m.eps}
            sites.extend(dict(site) for _ in range(n))
        elif isinstance(m, _IN_TYPES):
            site = {"op": "aten.instance_norm.default", "module": path, "fixed": not m.track_running_stats,
                    "momentum": m.momentum, "eps": m.eps}
            sites.extend(dict(site) for _ in range(n))
        elif isinstance(m, nn.RReLU):
            sites.append({"op": "aten.rrelu.default", "module": path, "fixed": False})
        elif type(m) in _DROPOUT_OPS:
            op = _DROPOUT_OPS[type(m)]
            if getattr(m, "inplace", False):
                op = op.replace(".default", "_.default")  # aten.dropout_.default
            site = {"op": op, "module": path, "fixed": False, "p": m.p}
            sites.extend(dict(site) for _ in range(n))
    if isinstance(module, FunctionalDropout):
        sites.append({"op": "aten.dropout.default", "module": "", "fixed": False, "p": 0.2})
    return sites
