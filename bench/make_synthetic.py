"""Generates PT2 archives of a given node count for the scale benchmark, directly (no
torch.export of a huge model, which would take hours at a million nodes).

    python3 bench/make_synthetic.py --nodes 100000 OUT.pt2 [--mode train|eval]

How: torch.export exports and saves a one-block model (Linear -> BatchNorm1d -> ReLU ->
Dropout, plus a residual add) in the requested mode. The block's nodes, their tensor
metadata, signature entries and weight-config entries are then repeated, block k renamed
with a suffix and chained to block k-1, until the graph holds the requested number of nodes.
Node text (stack traces, nn_module_stack, ...) is exactly what torch wrote for the block, so
the program's bytes per node are those of a real export. Weight records are shared: every
block's config entry names the template's record, which torch.export.load accepts, so the
archive stays loadable while its size is dominated by the program, as intended here.
"""

import argparse
import io
import json
import re
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

WIDTH = 8


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(WIDTH, WIDTH)
        self.bn = nn.BatchNorm1d(WIDTH, momentum=0.2, eps=1e-4)
        self.drop = nn.Dropout(0.25)

    def forward(self, x):
        return x + self.drop(torch.relu(self.bn(self.lin(x))))


class OneBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return self.block(x)


def template(mode):
    """The archive torch writes for OneBlock in `mode`, as {record name: bytes}."""
    torch.manual_seed(0)
    model = OneBlock().train(mode == "train")
    example = (torch.randn(4, WIDTH),)
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, example), buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def build(mode, nodes):
    records = template(mode)
    root = next(iter(records)).split("/", 1)[0]
    program_name = f"{root}/models/model.json"
    weights_name = f"{root}/data/weights/model_weights_config.json"
    program = json.loads(records[program_name])
    graph = program["graph_module"]["graph"]
    signature = program["graph_module"]["signature"]
    user_specs = [s for s in signature["input_specs"] if "user_input" in s]
    state_specs = [s for s in signature["input_specs"] if "user_input" not in s]
    if len(user_specs) != 1 or any("user_output" not in s for s in signature["output_specs"]):
        raise SystemExit("make_synthetic: the template's signature changed; update the generator")
    user_input = user_specs[0]["user_input"]["arg"]["as_tensor"]["name"]
    block_output = graph["outputs"][0]["as_tensor"]["name"]
    block_nodes = graph["nodes"]
    per_block = len(block_nodes)
    blocks = max(1, nodes // per_block)

    # Every name the block defines (placeholders of its state, node names and outputs) gets
    # the suffix _<k>; the block's input is the previous block's output.
    state_inputs = [next(iter(s.values()))["arg"]["name"] for s in state_specs]
    local = set(state_inputs) | {n["name"] for n in block_nodes}
    for n in block_nodes:
        local.update(re.findall(r'"name": "([^"]+)"', json.dumps(n["outputs"])))
    name_token = re.compile(r'"(%s)"' % "|".join(re.escape(n) for n in sorted(local, key=len, reverse=True)))

    def instance(text, k, chain_input):
        text = name_token.sub(lambda m: f'"{m.group(1)}_{k}"', text)
        text = text.replace(f'"{user_input}"', f'"{chain_input}"')
        # Module paths: block -> blocks.<k> (fqns, nn_module_stack keys and paths).
        text = text.replace('"block.', f'"blocks.{k}.').replace(",block.", f",blocks.{k}.")
        return text.replace(",block,", f",blocks.{k},").replace("L__self__block", f"L__self__blocks_{k}_")

    weights = json.loads(records[weights_name])["config"]
    parts = {
        "nodes": ", ".join(json.dumps(n) for n in block_nodes),
        "tensor_values": ", ".join(f"{json.dumps(k)}: {json.dumps(v)}"
                                   for k, v in graph["tensor_values"].items() if k in local),
        "inputs": ", ".join(json.dumps({"as_tensor": {"name": n}}) for n in state_inputs),
        "input_specs": ", ".join(json.dumps(s) for s in state_specs),
        "weights": ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in weights.items()),
    }
    repeated = {key: [] for key in parts}
    chain = user_input
    for k in range(blocks):
        for key, text in parts.items():
            repeated[key].append(instance(text, k, chain))
        chain = f"{block_output}_{k}"

    # Splice the repeated parts into the template's own serialization at marked places.
    marker = "\u0001"
    graph["nodes"] = [marker + "nodes"]
    graph["tensor_values"] = {marker + "tensor_values": None,
                              **{k: v for k, v in graph["tensor_values"].items() if k not in local}}
    graph["inputs"] = [marker + "inputs", {"as_tensor": {"name": user_input}}]
    graph["outputs"] = [{"as_tensor": {"name": chain}}]
    signature["input_specs"] = [marker + "input_specs"] + user_specs
    signature["output_specs"][0]["user_output"]["arg"]["as_tensor"]["name"] = chain
    program["graph_module"]["module_call_graph"] = program["graph_module"]["module_call_graph"][:1]
    text = json.dumps(program)
    for key in ("nodes", "inputs", "input_specs"):
        text = text.replace(json.dumps(marker + key), ", ".join(repeated[key]), 1)
    text = text.replace(json.dumps(marker + "tensor_values") + ": null", ", ".join(repeated["tensor_values"]), 1)
    records[program_name] = text.encode()
    records[weights_name] = ('{"config": {' + ", ".join(repeated["weights"]) + "}}").encode()
    return records, blocks * per_block


def write(records, path):
    # Stored records, as torch writes them; zipfile does not pad data to 64 bytes, which
    # neither torch nor exmode needs in order to read.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, data in records.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--nodes", type=int, required=True, help="approximate node count")
    parser.add_argument("--mode", choices=("train", "eval"), default="train")
    args = parser.parse_args()
    records, count = build(args.mode, args.nodes)
    write(records, args.out)
    program = next(v for k, v in records.items() if k.endswith("models/model.json"))
    print(f"{args.out}: {count} nodes, program {len(program) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
