"""nn.LSTM / nn.GRU / nn.RNN (num_layers=2, dropout=0.3) in train and eval.
Run: python probe_rnn.py [--json]
"""
import sys
import warnings

import torch
from torch import nn

from _common import print_json_nodes

warnings.filterwarnings("ignore")


def fmt(a):
    if isinstance(a, torch.fx.Node):
        return a.name
    if isinstance(a, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in a) + "]"
    return repr(a)


class Wrap(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


def main():
    x = torch.randn(2, 5, 4)
    cases = [
        ("nn.LSTM(4, 8, num_layers=2, dropout=0.3, batch_first=True)", nn.LSTM(4, 8, num_layers=2, dropout=0.3, batch_first=True)),
        ("nn.GRU(4, 8, num_layers=2, dropout=0.3, batch_first=True)", nn.GRU(4, 8, num_layers=2, dropout=0.3, batch_first=True)),
        ("nn.RNN(4, 8, num_layers=2, dropout=0.3, batch_first=True)", nn.RNN(4, 8, num_layers=2, dropout=0.3, batch_first=True)),
        ("nn.RNN(..., nonlinearity='relu', bidirectional=True)", nn.RNN(4, 8, num_layers=2, dropout=0.3, batch_first=True, nonlinearity="relu", bidirectional=True)),
        ("nn.LSTM(4, 8, num_layers=1, dropout=0.0)", nn.LSTM(4, 8, num_layers=1, batch_first=True)),
    ]
    for name, rnn in cases:
        m = Wrap(rnn)
        for train in (True, False):
            m.train(train)
            try:
                ep = torch.export.export(m, (x,))
            except Exception as e:  # noqa: BLE001
                print(f"==== {name} {'train' if train else 'eval'}: EXPORT FAILED {type(e).__name__}: {str(e)[:300]}")
                continue
            print(f"==== {name} {'train' if train else 'eval'} (torch {torch.__version__})")
            for n in ep.graph.nodes:
                if n.op == "call_function" and any(s in str(n.target) for s in ("lstm", "gru", "rnn", "dropout", "zeros")):
                    print(f"  {n.name} = {n.target}({', '.join(fmt(a) for a in n.args)})"
                          + (f" kwargs={dict(n.kwargs)}" if n.kwargs else ""))
            if "--json" in sys.argv:
                print_json_nodes(ep, ["lstm", "gru", "rnn_"], name)


if __name__ == "__main__":
    main()
