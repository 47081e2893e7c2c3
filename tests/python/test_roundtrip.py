"""Archive-level round trips: switching there and back gives back the program torch
exported, op for op and literal for literal; switching to the current mode changes
nothing; records other than the program come out byte for byte; the archive stays a
valid, torch-shaped zip."""

import json
import subprocess
import sys
import zipfile

import pytest

import models
from conftest import (
    MODES,
    archive_records,
    first_difference,
    inspect_json,
    load_module,
    node_list,
    read_program,
    repack,
    run_ok,
)

MODEL_NAMES = list(models.ALL_MODELS)
OTHER = {"train": "eval", "eval": "train"}


def _there_and_back(export_cache, name, src, tmp_path):
    mid, back = tmp_path / "mid.pt2", tmp_path / "back.pt2"
    run_ok(OTHER[src], export_cache(name, src), "-o", mid)
    run_ok(src, mid, "-o", back)
    return read_program(export_cache(name, src)), read_program(back)


@pytest.mark.parametrize("src", MODES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_roundtrip_nodes(name, src, tmp_path, export_cache):
    """src -> other -> src gives the exported node list back (value names aside)."""
    original, back = _there_and_back(export_cache, name, src, tmp_path)
    a, b = node_list(original, canonical_names=True), node_list(back, canonical_names=True)
    assert a == b, first_difference(a, b)


@pytest.mark.parametrize("src", MODES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_roundtrip_exact(name, src, tmp_path, export_cache):
    """Stricter: the same node names and value names too, the same graph inputs and
    outputs, signature and tensor_values (node metadata ignored)."""
    original, back = _there_and_back(export_cache, name, src, tmp_path)
    a, b = node_list(original), node_list(back)
    assert a == b, first_difference(a, b)
    g0, g1 = original["graph_module"]["graph"], back["graph_module"]["graph"]
    for key in ("inputs", "outputs", "tensor_values"):
        assert g0[key] == g1[key], f"graph.{key} differs"
    assert original["graph_module"]["signature"] == back["graph_module"]["signature"]


@pytest.mark.parametrize("name,src", [(n, s) for n in MODEL_NAMES for s in MODES
                                      if (n, s, OTHER[s]) not in models.INEXACT])
def test_switch_equals_direct_export(name, src, tmp_path, export_cache):
    """Switching an archive exported in src to the other mode gives the nodes torch
    writes when exporting in that mode directly (value names aside)."""
    dst = OTHER[src]
    out = tmp_path / "out.pt2"
    run_ok(dst, export_cache(name, src), "-o", out)
    a = node_list(read_program(export_cache(name, dst)), canonical_names=True)
    b = node_list(read_program(out), canonical_names=True)
    assert a == b, first_difference(a, b)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_switch_to_current_mode_is_a_no_op(name, mode, tmp_path, export_cache):
    src = export_cache(name, mode)
    out = tmp_path / "out.pt2"
    proc = run_ok(mode, src, "-o", out)
    assert out.exists(), "output must be written even when nothing changes"
    said = (proc.stdout + proc.stderr).lower()
    # A program with no switchable site (inspect says mode none: only fixed sites, e.g. an
    # eval export of MultiheadAttention) may instead say there is nothing to switch.
    no_mode = name in models.MODE_INSENSITIVE or inspect_json(src)["programs"][0]["mode"] == "none"
    words = ("already", "nothing", "no mode") if no_mode else ("already",)
    assert any(w in said for w in words), (
        f"exmode should say the program is already in {mode} mode; said:\n{proc.stdout}{proc.stderr}"
    )
    assert read_program(out) == read_program(src)


@pytest.mark.parametrize("dst", MODES)
@pytest.mark.parametrize("src", MODES)
@pytest.mark.parametrize("name", ["resnetish", "nested", "bn_twice", "mlp_dropout", "dropout_inplace",
                                  "with_constants"])
def test_non_program_records_unchanged(name, src, dst, tmp_path, export_cache):
    """Weights (data/weights/*) and every other record except the program and the
    serialization id are byte-identical; no record appears or disappears."""
    out = tmp_path / "out.pt2"
    run_ok(dst, export_cache(name, src), "-o", out)
    before, after = archive_records(export_cache(name, src)), archive_records(out)
    assert set(before) == set(after)
    weights = [n for n in before if n.startswith("data/weights/")]
    assert weights, "test archive should have weight records"
    for n in before:
        if n.startswith("models/") or n == ".data/serialization_id":
            continue
        assert before[n] == after[n], f"record {n} changed"


@pytest.mark.parametrize("dst", MODES)
@pytest.mark.parametrize("src", MODES)
@pytest.mark.parametrize("name", ["resnetish", "bn_twice", "mlp_dropout"])
def test_output_archive_is_valid_zip(name, src, dst, tmp_path, export_cache):
    out = tmp_path / "out.pt2"
    run_ok(dst, export_cache(name, src), "-o", out)
    proc = subprocess.run([sys.executable, "-m", "zipfile", "-t", str(out)], capture_output=True, text=True)
    # `python -m zipfile -t` exits 0 even when a CRC is wrong; it says so on stdout.
    assert proc.returncode == 0 and "corrupt" not in proc.stdout.lower(), proc.stdout + proc.stderr
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None


@pytest.mark.parametrize("src", MODES)
@pytest.mark.parametrize("name", ["resnetish", "bn_twice", "mlp_dropout"])
def test_output_archive_layout(name, src, tmp_path, export_cache):
    """Like torch.export.save's output: one top-level folder, .data/version present,
    every record stored (not compressed), record data aligned to 64 bytes."""
    out = tmp_path / "out.pt2"
    run_ok(OTHER[src], export_cache(name, src), "-o", out)
    raw = out.read_bytes()
    with zipfile.ZipFile(out) as z:
        infos = z.infolist()
    tops = {i.filename.split("/", 1)[0] for i in infos}
    assert len(tops) == 1, tops
    assert any(i.filename.endswith("/.data/version") for i in infos)
    for i in infos:
        assert i.compress_type == zipfile.ZIP_STORED, f"{i.filename} is compressed"
        off = i.header_offset
        assert raw[off:off + 4] == b"PK\x03\x04"
        name_len = int.from_bytes(raw[off + 26:off + 28], "little")
        extra_len = int.from_bytes(raw[off + 28:off + 30], "little")
        data_off = off + 30 + name_len + extra_len
        assert data_off % 64 == 0, f"{i.filename}: data at offset {data_off} is not 64-byte aligned"


def test_roundtrip_program_json_otherwise_unchanged(tmp_path, export_cache):
    """eval -> train -> eval: everything in the program JSON outside the graph survives
    unchanged, and so does the metadata of every node (eval has no nodes that the
    switch to train removes, so all of them must come back as they were)."""
    original, back = _there_and_back(export_cache, "resnetish", "eval", tmp_path)
    for key in original:
        if key != "graph_module":
            assert original[key] == back[key], f"{key} changed"
    for key in original["graph_module"]:
        if key != "graph":
            assert original["graph_module"][key] == back["graph_module"][key], f"graph_module.{key} changed"
    meta0 = [n["metadata"] for n in original["graph_module"]["graph"]["nodes"]]
    meta1 = [n["metadata"] for n in back["graph_module"]["graph"]["nodes"]]
    assert json.dumps(meta0, sort_keys=True) == json.dumps(meta1, sort_keys=True)


def test_unknown_json_fields_are_carried_through(tmp_path, export_cache):
    """Keys exmode does not know (at the top, in the graph, in a switched node) come out
    unchanged; torch.export.load ignores unknown keys, so the archive stays loadable."""
    src = tmp_path / "src.pt2"
    program = read_program(export_cache("conv_bn2d", "eval"))
    program["x_future_field"] = {"a": [1, 2.5, None, "s"]}
    program["graph_module"]["graph"]["x_graph_field"] = 17
    for node in program["graph_module"]["graph"]["nodes"]:
        node["x_node_field"] = {"target": node["target"]}
    repack(export_cache("conv_bn2d", "eval"), src, modify={"models/model.json": json.dumps(program).encode()})
    out = tmp_path / "out.pt2"
    run_ok("train", src, "-o", out)
    result = read_program(out)
    assert result["x_future_field"] == program["x_future_field"]
    assert result["graph_module"]["graph"]["x_graph_field"] == 17
    for node in result["graph_module"]["graph"]["nodes"]:
        if node["target"] != "torch.ops.aten.add_.Tensor":  # nodes exmode created
            assert node.get("x_node_field") == {"target": node["target"]}, node["name"]
    load_module(out)
