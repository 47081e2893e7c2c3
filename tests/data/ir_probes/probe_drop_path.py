"""Stochastic depth / drop path in the default export IR, train and eval.

Uses torchvision / timm / transformers when importable; otherwise verbatim
copies of their code below (so the probe also runs where they are missing).
Run: python probe_drop_path.py [--json] [--dynamic]
"""
import sys

import torch
from torch import nn

from _common import export, print_graph, print_json_nodes

SHOW_JSON = "--json" in sys.argv
DYNAMIC = "--dynamic" in sys.argv


# torchvision.ops.stochastic_depth (0.29.1), verbatim minus the logging call
def tv_stochastic_depth(input, p, mode, training=True):
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    if mode == "row":
        size = [input.shape[0]] + [1] * (input.ndim - 1)
    else:
        size = [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype, device=input.device)
    noise = noise.bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return input * noise


class TvSD(nn.Module):
    def __init__(self, p, mode):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x):
        return tv_stochastic_depth(x, self.p, self.mode, self.training)


# timm.layers.drop.drop_path (1.0.31)
def timm_drop_path(x, drop_prob=0., training=False, scale_by_keep=True):
    if drop_prob == 0. or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class TimmDP(nn.Module):
    def __init__(self, drop_prob, scale_by_keep=True):
        super().__init__()
        self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

    def forward(self, x):
        return timm_drop_path(x, self.drop_prob, self.training, self.scale_by_keep)


# transformers 5.23 <Model>DropPath.forward (convnext, swin, beit, ... all identical)
class HfDP(nn.Module):
    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states):
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        random_tensor = torch.rand(shape, dtype=hidden_states.dtype, device=hidden_states.device)
        random_tensor = torch.floor(random_tensor + keep_prob)
        return hidden_states.div(keep_prob) * random_tensor


# transformers 4.x module-level drop_path (keep_prob + rand, then floor_ in place)
def hf4_drop_path(input, drop_prob=0.0, training=False):
    if drop_prob == 0.0 or not training:
        return input
    keep_prob = 1 - drop_prob
    shape = (input.shape[0],) + (1,) * (input.ndim - 1)
    random_tensor = keep_prob + torch.rand(shape, dtype=input.dtype, device=input.device)
    random_tensor.floor_()
    output = input.div(keep_prob) * random_tensor
    return output


class Hf4DP(nn.Module):
    def __init__(self, drop_prob):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return hf4_drop_path(x, self.drop_prob, self.training)


# transformers 5.23 LevitResidualLayer (drop inlined in the residual)
class LevitRes(nn.Module):
    def __init__(self, drop_rate):
        super().__init__()
        self.module = nn.Identity()
        self.drop_rate = drop_rate

    def forward(self, hidden_state):
        if self.training and self.drop_rate > 0:
            rnd = torch.rand(hidden_state.size(0), 1, 1, device=hidden_state.device)
            rnd = rnd.ge_(self.drop_rate).div(1 - self.drop_rate).detach()
            return hidden_state + self.module(hidden_state) * rnd
        return hidden_state + self.module(hidden_state)


def real_modules():
    out = {}
    try:
        from torchvision.ops import StochasticDepth
        out["tv.StochasticDepth"] = lambda p, mode: StochasticDepth(p, mode)
    except ImportError:
        pass
    try:
        from timm.layers import DropPath
        out["timm.DropPath"] = lambda p, sbk=True: DropPath(p, scale_by_keep=sbk)
    except ImportError:
        pass
    try:
        from transformers.models.convnext.modeling_convnext import ConvNextDropPath
        out["hf.ConvNextDropPath"] = lambda p: ConvNextDropPath(p)
        from transformers.models.levit.modeling_levit import LevitResidualLayer
        out["hf.LevitResidualLayer"] = lambda p: LevitResidualLayer(nn.Identity(), p)
    except ImportError:
        pass
    return out


class Wrap(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.dp = inner

    def forward(self, x):
        return self.dp(x) + 1


def cases():
    real = real_modules()
    c = []
    for p in (0.2, 0.0, 1.0):
        for mode in ("row", "batch"):
            c.append((f"tv.StochasticDepth({p}, {mode!r})",
                      real["tv.StochasticDepth"](p, mode) if "tv.StochasticDepth" in real else TvSD(p, mode)))
        for sbk in (True, False):
            c.append((f"timm.DropPath({p}, scale_by_keep={sbk})",
                      real["timm.DropPath"](p, sbk) if "timm.DropPath" in real else TimmDP(p, sbk)))
        c.append((f"hf5 ConvNextDropPath({p})",
                  real["hf.ConvNextDropPath"](p) if "hf.ConvNextDropPath" in real else HfDP(p)))
        c.append((f"hf4 drop_path({p}) (inline copy)", Hf4DP(p)))
        c.append((f"hf5 LevitResidualLayer(Identity, {p})",
                  real["hf.LevitResidualLayer"](p) if "hf.LevitResidualLayer" in real else LevitRes(p)))
    return c


def main():
    x = torch.randn(2, 3, 4, 4)
    xl = torch.randn(2, 5, 8)
    for name, inner in cases():
        m = Wrap(inner)
        inp = (xl,) if "Levit" in name else (x,)
        for train in (True, False):
            if not train and ("0.0" in name or "1.0" in name):
                continue
            ds = ({"x": {0: torch.export.Dim("batch", min=2, max=64)}},) if DYNAMIC else None
            try:
                ep = export(m, inp, train, dynamic_shapes=ds[0] if ds else None)
            except Exception as e:  # noqa: BLE001
                print(f"==== {name} {'train' if train else 'eval'}: EXPORT FAILED {type(e).__name__}: {str(e)[:300]}")
                continue
            print_graph(ep, f"{name} {'train' if train else 'eval'}" + (" dynamic batch" if DYNAMIC else ""))
            if SHOW_JSON:
                print_json_nodes(ep, ["empty", "bernoulli", "div", "mul", "rand", "floor", "add", "ge", "sym_size", "new_"], name)


if __name__ == "__main__":
    main()
