"""Writes the small real PT2 archives the C++ unit tests read, and a manifest of the
sites each one holds (expected_sites.json), read from the program torch wrote.

    python3 tests/data/make_test_archives.py

Archives (all exported with torch.export.export and saved with torch.export.save):
  dropout_bn_train.pt2 / dropout_bn_eval.pt2  Conv2d + BatchNorm2d(momentum=0.3, eps=1e-3)
                                              + ReLU + Dropout(0.3), in train / eval mode
  bn_twice_train.pt2                          one BatchNorm1d called twice in one forward
                                              (the second num_batches_tracked add_ takes the
                                              first add_'s output as its input)
  no_running_stats_train.pt2                  BatchNorm2d(track_running_stats=False): training
                                              stays True in both modes, no add_ node
"""

import json
import sys
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
import models  # noqa: E402  (the test models' helpers, shared with the Python suite)


def _randomize_batch_norms(module):
    return models._randomize_batch_norms(module, seed=1)


class BatchNormTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4, momentum=0.25, eps=1e-3)

    def forward(self, x):
        return self.bn(torch.relu(self.fc(self.bn(x))))


def dropout_bn():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.3, eps=1e-3), nn.ReLU(),
                      nn.Dropout(0.3))
    return _randomize_batch_norms(m), torch.randn(2, 3, 4, 4)


def bn_twice():
    torch.manual_seed(0)
    return _randomize_batch_norms(BatchNormTwice()), torch.randn(3, 4)


def no_running_stats():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False, momentum=0.3, eps=1e-3))
    return _randomize_batch_norms(m), torch.randn(2, 3, 4, 4)


ARCHIVES = [
    ("dropout_bn_train.pt2", dropout_bn, "train"),
    ("dropout_bn_eval.pt2", dropout_bn, "eval"),
    ("bn_twice_train.pt2", bn_twice, "train"),
    ("no_running_stats_train.pt2", no_running_stats, "train"),
]

SITE_OPS = {"torch.ops.aten.dropout.default", "torch.ops.aten.batch_norm.default"}


def _arg(node, name):
    for i in node["inputs"]:
        if i["name"] == name:
            return next(iter(i["arg"].items()))
    return None, None


def _sites(program):
    sites = []
    for node in program["graph_module"]["graph"]["nodes"]:
        if node["target"] not in SITE_OPS:
            continue
        stack = node["metadata"].get("nn_module_stack", "")
        site = {"node": node["name"], "op": node["target"][len("torch.ops."):],
                "module": stack.split(";")[-1].split(",")[1] if stack else ""}
        if "dropout" in node["target"]:
            site["mode"] = "train" if _arg(node, "train")[1] else "eval"
            site["p"] = _arg(node, "p")[1]
        else:
            fixed = _arg(node, "running_mean")[0] == "as_none"
            site["mode"] = "fixed" if fixed else ("train" if _arg(node, "training")[1] else "eval")
            site["momentum"] = _arg(node, "momentum")[1]
            site["eps"] = _arg(node, "eps")[1]
        sites.append(site)
    return sites


def main():
    manifest = {}
    for filename, factory, mode in ARCHIVES:
        module, x = factory()
        module.train() if mode == "train" else module.eval()
        path = HERE / filename
        torch.export.save(torch.export.export(module, (x,)), str(path))
        with zipfile.ZipFile(path) as z:
            program = json.loads(z.read(next(n for n in z.namelist() if n.endswith("/models/model.json"))))
        manifest[filename] = {"export_mode": mode, "sites": _sites(program),
                              "add_nodes": [n["name"] for n in program["graph_module"]["graph"]["nodes"]
                                            if n["target"] == "torch.ops.aten.add_.Tensor"]}
        size = path.stat().st_size
        assert size < 50_000, f"{filename} is {size} bytes"
        print(f"wrote {path} ({size} bytes)")
    (HERE / "expected_sites.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {HERE / 'expected_sites.json'}")


if __name__ == "__main__":
    main()
