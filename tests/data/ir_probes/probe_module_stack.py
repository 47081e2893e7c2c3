"""How nn_module_stack is written: root first, nested, repeated calls,
nn.Sequential / ModuleList / ModuleDict children, and functional code.
Run: python probe_module_stack.py
"""
import torch
from torch import nn

from _common import model_json


class Leaf(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        return self.drop(x) + 1


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Dropout(0.2)
        self.seq = nn.Sequential(nn.Dropout(0.3), Leaf())
        self.blocks = nn.ModuleList([Leaf(), Leaf()])
        self.named = nn.ModuleDict({"a_b": nn.Dropout(0.4)})
        self.outer = nn.Sequential(nn.Sequential(nn.Dropout(0.5)))
        self.twice = Leaf()

    def forward(self, x):
        x = self.shared(x)
        x = self.shared(x)          # same module called twice
        x = self.seq(x)
        for b in self.blocks:
            x = b(x)
        x = self.named["a_b"](x)
        x = self.outer(x)
        for _ in range(3):
            x = self.twice(x)       # nested module called three times
        return torch.nn.functional.dropout(x, 0.6, self.training)  # functional at the root


def main():
    print("torch", torch.__version__)
    ep = torch.export.export(M().train(), (torch.randn(2, 4),))
    doc = model_json(ep)
    for n in doc["graph_module"]["graph"]["nodes"]:
        md = n.get("metadata", {})
        p = [i["arg"].get("as_float") for i in n["inputs"] if "as_float" in i["arg"]]
        print(f"{n['outputs'][0]['as_tensor']['name']:12s} {n['target'].split('.')[-2]:8s} p={p}  nn_module_stack={md.get('nn_module_stack')!r}")


if __name__ == "__main__":
    main()
