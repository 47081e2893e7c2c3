"""Which ops an sdpa node with dropout becomes after ep.run_decompositions() on CPU
(the default IR keeps aten.scaled_dot_product_attention.default).
Run: python probe_sdpa_decomposed.py
"""
import torch
import torch.nn.functional as F
from torch import nn


class S(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.1 if self.training else 0.0)


def main():
    q, k, v = (torch.randn(2, 2, 4, 8) for _ in range(3))
    for train in (True, False):
        ep = torch.export.export(S().train(train), (q, k, v))
        print(f"== {'train' if train else 'eval'} (torch {torch.__version__}) default IR:",
              [str(n.target) for n in ep.graph.nodes if n.op == "call_function"])
        d = ep.run_decompositions()
        print("   after run_decompositions():")
        for n in d.graph.nodes:
            if n.op == "call_function":
                print("    ", n.target, tuple(a.name if isinstance(a, torch.fx.Node) else a for a in n.args), dict(n.kwargs) or "")


if __name__ == "__main__":
    main()
