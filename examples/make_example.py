"""Builds examples/resnetish_train.pt2: a small residual conv net with batch norm and
dropout, exported with torch.export in training mode and saved as a PT2 archive.

    python3 examples/make_example.py                 # writes examples/resnetish_train.pt2
    python3 examples/make_example.py --check build/exmode

Then, for example:

    build/exmode inspect examples/resnetish_train.pt2
    build/exmode eval examples/resnetish_train.pt2 -o /tmp/resnetish_eval.pt2

--check switches the archive to eval mode with the given exmode binary and verifies that
the result computes exactly what the eager model computes in eval mode.
"""

import argparse
import copy
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent


class Block(nn.Module):
    """conv-bn-relu-conv-bn plus a (projected) skip connection, then channel dropout."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, momentum=0.2, eps=1e-4)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=0.2, eps=1e-4)
        self.skip = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(cout, momentum=0.2, eps=1e-4))
        self.drop = nn.Dropout2d(0.1)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.drop(torch.relu(y + self.skip(x)))


class ResNetish(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(8, momentum=0.2, eps=1e-4), nn.ReLU())
        self.blocks = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2), Block(16, 16, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.head(self.pool(self.blocks(self.stem(x))))


def build():
    """The seeded model, with batch-norm statistics as if it had trained a while."""
    torch.manual_seed(0)
    model = ResNetish()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(100)
    example = torch.randn(2, 3, 16, 16)
    return model, example


def check(exmode, archive, model, example):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "resnetish_eval.pt2"
        subprocess.run([exmode, "eval", str(archive), "-o", str(out)], check=True)
        switched = torch.export.load(str(out)).module()
        eager = copy.deepcopy(model).eval()
        same = torch.equal(switched(example), eager(example))
        print("eval-mode outputs identical to eager PyTorch:", same)
        return same


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=HERE / "resnetish_train.pt2")
    parser.add_argument("--check", metavar="EXMODE", help="verify an eval switch with this exmode binary")
    args = parser.parse_args()

    model, example = build()
    pristine = copy.deepcopy(model)
    model.train()
    ep = torch.export.export(model, (example,))
    torch.export.save(ep, str(args.output))
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")
    if args.check and not check(args.check, args.output, pristine, example):
        sys.exit(1)


if __name__ == "__main__":
    main()
