"""How aten.scaled_dot_product_attention's arguments are recorded and serialized
for direct F.scaled_dot_product_attention calls (train flag irrelevant here:
the literals are whatever the caller passes).
Run: python probe_sdpa_args.py
"""
import torch
import torch.nn.functional as F
from torch import nn

from _common import print_json_nodes


class S(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, q, k, v, m=None):
        if m is not None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=m, **self.kw)
        return F.scaled_dot_product_attention(q, k, v, **self.kw)


def main():
    q = torch.randn(2, 4, 8, 8)
    kv = torch.randn(2, 2, 8, 8)
    k4 = torch.randn(2, 4, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    cases = [
        ("dropout_p=0.1", S(dropout_p=0.1), (q, k4, k4.clone())),
        ("dropout_p=0.0", S(dropout_p=0.0), (q, k4, k4.clone())),
        ("dropout_p=0.1 train-style, mask", S(dropout_p=0.1), (q, k4, k4.clone(), mask)),
        ("is_causal=True", S(is_causal=True), (q, k4, k4.clone())),
        ("dropout_p=0.1, is_causal=True, scale=0.5", S(dropout_p=0.1, is_causal=True, scale=0.5), (q, k4, k4.clone())),
        ("enable_gqa=True", S(enable_gqa=True), (q, kv, kv.clone())),
        ("dropout_p=0.2, enable_gqa=True", S(dropout_p=0.2, enable_gqa=True), (q, kv, kv.clone())),
        ("scale=None explicit", S(scale=None), (q, k4, k4.clone())),
    ]
    for name, m, args in cases:
        for train in (True, False):
            m.train(train)
            ep = torch.export.export(m, args)
            n = next(n for n in ep.graph.nodes if "attention" in str(n.target))
            print(f"{name:45s} {'train' if train else 'eval '} {n.target}{tuple(a.name if isinstance(a, torch.fx.Node) else a for a in n.args)} kwargs={dict(n.kwargs)}")
        print_json_nodes(ep, ["scaled_dot_product"], name)


if __name__ == "__main__":
    print("torch", torch.__version__)
    main()
