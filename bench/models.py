"""The benchmark's models, in plain torch.nn, and their export to PT2 archives.

    python3 bench/models.py NAME OUT.pt2     # export NAME in train mode and save it

Every model is built locally from a fixed seed (nothing is downloaded) and exported with
torch.export.export in training mode, then saved with torch.export.save.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn


# (a) ResNet-50-shaped: bottleneck blocks [3, 4, 6, 3], 53 BatchNorm2d.
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = x if self.downsample is None else self.downsample(x)
        return torch.relu(y + skip)


class ResNet50(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        stages = []
        for i, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(inplanes, planes, 2 if (b == 0 and i > 0) else 1))
                inplanes = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(inplanes, classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(torch.mean(x, dim=(2, 3)), 1))


# (b) 24-layer Transformer encoder.
class Transformer(nn.Module):
    def __init__(self, layers=24, d_model=256, nhead=4, dropout=0.1):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model, nhead, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


# (c) Wide: many small batch-norm + dropout blocks (2 sites each).
class Wide(nn.Module):
    def __init__(self, blocks=1000, width=8):
        super().__init__()
        self.blocks = nn.Sequential(*[nn.Sequential(nn.BatchNorm1d(width), nn.Dropout(0.1))
                                      for _ in range(blocks)])

    def forward(self, x):
        return self.blocks(x)


# File-to-file: large weights, few nodes.
class BigLinear(nn.Module):
    def __init__(self, layers=16, width=4096):
        super().__init__()
        self.layers = nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width),
                                                    nn.Dropout(0.1))
                                      for _ in range(layers)])

    def forward(self, x):
        return self.layers(x)


# name -> (constructor, example inputs). Batch sizes are > 1: batch norm in train mode needs
# more than one value per channel.
MODELS = {
    "resnet50": (ResNet50, lambda: (torch.randn(1, 3, 64, 64),)),
    "transformer24": (Transformer, lambda: (torch.randn(2, 16, 256),)),
    "wide1000": (Wide, lambda: (torch.randn(4, 8),)),
    "wide100": (lambda: Wide(blocks=100), lambda: (torch.randn(4, 8),)),
    "linear16x4096": (BigLinear, lambda: (torch.randn(2, 4096),)),
    "linear4x1024": (lambda: BigLinear(layers=4, width=1024), lambda: (torch.randn(2, 1024),)),
}


def export(name, out):
    """Builds model `name` in train mode, exports it and saves it to `out`."""
    torch.manual_seed(0)
    make, inputs = MODELS[name]
    model = make().train()
    start = time.perf_counter()
    ep = torch.export.export(model, inputs())
    exported = time.perf_counter()
    tmp = out.with_name(out.stem + ".tmp.pt2")
    torch.export.save(ep, tmp)
    tmp.rename(out)
    print(f"{out}: {len(ep.graph.nodes)} nodes, exported in {exported - start:.1f} s, "
          f"saved in {time.perf_counter() - exported:.1f} s", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(MODELS))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    export(args.name, args.out)


if __name__ == "__main__":
    main()
