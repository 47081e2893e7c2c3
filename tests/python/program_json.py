"""Reading and comparing the program JSON (models/<name>.json) of a PT2 archive.

A plain module shared by the Python tests (tests/python/conftest.py re-exports it) and the
real-architecture tier (tests/real/conftest.py imports it): no pytest, no torch, only what
torch.export wrote, read as JSON.
"""

import json
import zipfile

# How much of each side first_difference shows of a differing node.
DIFFERENCE_CHARS = 600


def top_folder(names):
    """The one top-level folder all record names of an archive are under."""
    tops = {n.split("/", 1)[0] for n in names}
    assert len(tops) == 1, f"records under more than one top-level folder: {sorted(tops)}"
    return tops.pop()


def read_program(path, name="model"):
    """The parsed program JSON `models/<name>.json` of the archive at `path`."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        record = f"{top_folder(names)}/models/{name}.json"
        if record not in names:
            raise AssertionError(f"{path}: no models/{name}.json")
        return json.loads(z.read(record))


def _canon_arg(arg, names):
    if isinstance(arg, dict):
        return {k: (names.get(v, v) if k in ("name", "as_name") and isinstance(v, str) else _canon_arg(v, names))
                for k, v in arg.items()}
    if isinstance(arg, list):
        return [_canon_arg(a, names) for a in arg]
    return arg


def node_list(program, canonical_names=False):
    """The graph's nodes as comparable entries: target, inputs (argument name, argument with
    its kind and literal value, input kind) and outputs, metadata dropped; with the node's
    name unless canonical_names.

    With canonical_names, value names are replaced by their order of definition (graph
    inputs first, then node outputs), so two graphs that read the same values by position
    compare equal however their values are named.
    """
    graph = program["graph_module"]["graph"]
    names = {}
    if canonical_names:
        defined = []

        def collect(args):
            for a in args:
                for v in a.values():
                    if isinstance(v, dict) and isinstance(v.get("name"), str):
                        defined.append(v["name"])
                    elif isinstance(v, list):
                        defined.extend(t["name"] for t in v if isinstance(t, dict) and "name" in t)

        collect(graph["inputs"])
        for node in graph["nodes"]:
            collect(node["outputs"])
        names = {n: f"%{i}" for i, n in enumerate(dict.fromkeys(defined))}
    result = []
    for node in graph["nodes"]:
        inputs = [(i["name"], _canon_arg(i["arg"], names), i.get("kind")) for i in node["inputs"]]
        outputs = _canon_arg(node["outputs"], names)
        entry = {"target": node["target"], "inputs": inputs, "outputs": outputs}
        if not canonical_names:
            entry["name"] = node.get("name")
        result.append(entry)
    return result


def first_difference(a, b):
    """A readable description of where two node lists first differ (each node shown up to
    DIFFERENCE_CHARS characters)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return (f"node {i}:\n  expected {json.dumps(x)[:DIFFERENCE_CHARS]}\n"
                    f"  actual   {json.dumps(y)[:DIFFERENCE_CHARS]}")
    if len(a) != len(b):
        return f"lengths differ: expected {len(a)} nodes, got {len(b)}"
    return "no difference"
