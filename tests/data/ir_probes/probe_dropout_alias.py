"""Which dropout ops does export record, per mode, and does a later use of the
input get recorded as a use of the dropout output ("merge")?

Pattern A: h = drop(x); return h + x      -> merged if the add reads the dropout node twice
Pattern B: h = drop(x); return h * 2, x   -> merged if the 2nd output is the dropout node
Pattern C: y = x + 1; h = drop(y); return h * y  (input is an intermediate, not a placeholder)
Run: python probe_dropout_alias.py [p]   (default p=0.3)
"""
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn

warnings.filterwarnings("ignore")

P = float(sys.argv[1]) if len(sys.argv) > 1 else 0.3  # e.g. 0.0 or 1.0 for the edge cases

SHAPES = {"1d": (2, 3, 4), "2d": (2, 3, 4, 4), "3d": (2, 3, 2, 2, 2), "": (2, 3, 4, 4)}


def module_cases():
    for cls, dim in [(nn.Dropout, ""), (nn.Dropout1d, "1d"), (nn.Dropout2d, "2d"),
                     (nn.Dropout3d, "3d"), (nn.AlphaDropout, ""), (nn.FeatureAlphaDropout, "2d")]:
        for inplace in (False, True):
            yield f"nn.{cls.__name__}({P}, inplace={inplace})", (lambda c=cls, i=inplace: c(P, inplace=i)), dim


class Fn(nn.Module):
    def __init__(self, fn, inplace):
        super().__init__()
        self.fn, self.inplace = fn, inplace

    def forward(self, x):
        return self.fn(x, P, self.training, self.inplace)


def functional_cases():
    for fn, dim in [(F.dropout, ""), (F.dropout1d, "1d"), (F.dropout2d, "2d"), (F.dropout3d, "3d"),
                    (F.alpha_dropout, ""), (F.feature_alpha_dropout, "2d")]:
        for inplace in (False, True):
            yield f"F.{fn.__name__}(x, {P}, self.training, inplace={inplace})", (lambda f=fn, i=inplace: Fn(f, i)), dim


class PatA(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.drop = d

    def forward(self, x):
        h = self.drop(x)
        return h + x


class PatC(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.drop = d

    def forward(self, x):
        y = x + 1
        h = self.drop(y)
        return h * y


class PatB(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.drop = d

    def forward(self, x):
        h = self.drop(x)
        return h * 2, x


def arg_name(a):
    return a.name if isinstance(a, torch.fx.Node) else repr(a)


def probe(name, make, dim, train):
    x = torch.randn(*SHAPES[dim])
    res = {}
    for pat in (PatA, PatB, PatC):
        m = pat(make())
        m.train(train)
        ep = torch.export.export(m, (x.clone(),))
        nodes = [n for n in ep.graph.nodes if n.op == "call_function"]
        drops = [n for n in nodes if "dropout" in str(n.target)]
        dsig = "; ".join(f"{n.target}({', '.join(arg_name(a) for a in n.args)})" for n in drops) or "(none)"
        out = next(n for n in ep.graph.nodes if n.op == "output").args[0]
        if pat is PatA:
            add = next(n for n in nodes if "add" in str(n.target))
            res["A"] = f"{add.target}({', '.join(arg_name(a) for a in add.args)})"
        elif pat is PatC:
            mul = next(n for n in nodes if "mul" in str(n.target))
            res["C"] = f"{mul.target}({', '.join(arg_name(a) for a in mul.args)})"
        else:
            res["B"] = "outputs (" + ", ".join(arg_name(a) for a in out) + ")"
            spec = [str(s.arg.name) + ":" + s.kind.name for s in ep.graph_signature.output_specs]
            res["Bspec"] = " ".join(spec)
        res["drop"] = dsig
    print(f"{name:62s} {'train' if train else 'eval ':5s} | {res['drop']:55s} | A: {res['A']:30s} | B: {res['B']}  [{res['Bspec']}] | C: {res['C']}")


def main():
    print("torch", torch.__version__)
    for name, make, dim in list(module_cases()) + list(functional_cases()):
        for train in (True, False):
            try:
                probe(name, make, dim, train)
            except Exception as e:  # noqa: BLE001
                print(f"{name:62s} {'train' if train else 'eval ':5s} | EXPORT FAILED {type(e).__name__}: {str(e)[:200]}")


if __name__ == "__main__":
    main()
