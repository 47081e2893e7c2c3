"""Bad input: broken archives (exit 3) and broken programs (exit 4). For every case and
every command: the right exit status, exactly one non-empty line on stderr naming the
input file, no output file, no temporary files left behind, the input unchanged."""

import json
import shutil
import struct
import zipfile

import pytest

from conftest import archive_records, file_sha256, read_program, repack, run_exmode

BAD_ARCHIVE, BAD_PROGRAM = 3, 4
SOURCE = ("conv_bn2d", "train")


def _program_bytes(good):
    return archive_records(good)["models/model.json"]


def _with_program(good, dst, text):
    return repack(good, dst, modify={"models/model.json": text.encode() if isinstance(text, str) else text})


def _edit_program(good, dst, edit):
    program = read_program(good)
    edit(program)
    return _with_program(good, dst, json.dumps(program))


def _truncate(at):
    def make(good, dst):
        data = good.read_bytes()
        cut = at(len(data))
        assert 0 < cut < len(data)
        dst.write_bytes(data[:cut])
        return dst

    return make


def _dangling(program):
    nodes = program["graph_module"]["graph"]["nodes"]
    bn = next(n for n in nodes if n["target"] == "torch.ops.aten.batch_norm.default")
    bn["inputs"][0]["arg"] = {"as_tensor": {"name": "no_such_value"}}


def _dangling_output(program):
    outputs = program["graph_module"]["graph"]["outputs"]
    outputs[0] = {"as_tensor": {"name": "no_such_value"}}


def _schema_major(program):
    program["schema_version"]["major"] = 99


def _central_entry(data, path, record_suffix):
    """Offset of the central-directory entry of the record ending in `record_suffix`."""
    with zipfile.ZipFile(path) as z:
        pos, names = z.start_dir, [i.filename for i in z.infolist()]
    for name in names:
        if name.endswith(record_suffix):
            return pos
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[pos + 28:pos + 34])
        pos += 46 + name_len + extra_len + comment_len
    raise KeyError(record_suffix)


def _patch_central(record_suffix, offset, fmt, *values):
    """Overwrites a field of one central-directory entry (offset within the entry)."""
    def make(good, dst):
        data = bytearray(good.read_bytes())
        pos = _central_entry(data, good, record_suffix) + offset
        data[pos:pos + struct.calcsize(fmt)] = struct.pack(fmt, *values)
        dst.write_bytes(bytes(data))
        return dst

    return make


def _patch_local(record_suffix, offset, fmt, *values):
    """Overwrites a field of one record's local header."""
    def make(good, dst):
        data = bytearray(good.read_bytes())
        with zipfile.ZipFile(good) as z:
            info = next(i for i in z.infolist() if i.filename.endswith(record_suffix))
        pos = info.header_offset + offset
        data[pos:pos + struct.calcsize(fmt)] = struct.pack(fmt, *values)
        dst.write_bytes(bytes(data))
        return dst

    return make


def _stray_record(good, dst):
    repack(good, dst, writer="zipfile")
    with zipfile.ZipFile(dst, "a") as z:
        z.writestr("stray.txt", "outside the top-level folder")
    return dst


_DELETE = object()


def _replace_key(path, value):
    def edit(program):
        node = program
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return edit


def _duplicate_definition(program):
    nodes = program["graph_module"]["graph"]["nodes"]
    nodes[1]["outputs"] = json.loads(json.dumps(nodes[0]["outputs"]))


def _use_before_definition(program):
    nodes = program["graph_module"]["graph"]["nodes"]
    nodes[0], nodes[-1] = nodes[-1], nodes[0]


HUGE = 0x7FFFFFF0

CASES = {
    # name: (builder(good, dst) -> dst, expected exit status)
    "not_a_zip": (lambda g, d: (d.write_bytes(b"this is not a zip archive\n" * 40), d)[1], BAD_ARCHIVE),
    "empty": (lambda g, d: (d.write_bytes(b""), d)[1], BAD_ARCHIVE),
    "truncated_10": (_truncate(lambda n: 10), BAD_ARCHIVE),
    "truncated_1000": (_truncate(lambda n: 1000), BAD_ARCHIVE),
    "truncated_half": (_truncate(lambda n: n // 2), BAD_ARCHIVE),
    "truncated_central_directory": (_truncate(lambda n: n - 300), BAD_ARCHIVE),
    "truncated_end_record": (_truncate(lambda n: n - 10), BAD_ARCHIVE),
    "truncated_last_byte": (_truncate(lambda n: n - 1), BAD_ARCHIVE),
    "no_program_zipfile": (lambda g, d: repack(g, d, drop={"models/model.json"}, writer="zipfile"), BAD_ARCHIVE),
    "no_program_torch_writer": (lambda g, d: repack(g, d, drop={"models/model.json"}), BAD_ARCHIVE),
    "all_records_deflated": (lambda g, d: repack(g, d, writer="zipfile", compression=zipfile.ZIP_DEFLATED),
                             BAD_ARCHIVE),
    "program_record_deflated": (lambda g, d: repack(g, d, writer="zipfile", compress_only={"models/model.json"}),
                                BAD_ARCHIVE),
    "malformed_json_truncated": (lambda g, d: _with_program(g, d, _program_bytes(g)[:-40]), BAD_PROGRAM),
    "malformed_json_garbage": (lambda g, d: _with_program(g, d, '{"graph_module": {,,}'), BAD_PROGRAM),
    "json_array": (lambda g, d: _with_program(g, d, "[1, 2, 3]"), BAD_PROGRAM),
    "json_number": (lambda g, d: _with_program(g, d, "42"), BAD_PROGRAM),
    "unknown_schema_major": (lambda g, d: _edit_program(g, d, _schema_major), BAD_PROGRAM),
    "dangling_node_input": (lambda g, d: _edit_program(g, d, _dangling), BAD_PROGRAM),
    "dangling_graph_output": (lambda g, d: _edit_program(g, d, _dangling_output), BAD_PROGRAM),
    # zip structure lies about a record
    "record_outside_top_folder": (_stray_record, BAD_ARCHIVE),
    "no_data_version": (lambda g, d: repack(g, d, drop={".data/version"}, writer="zipfile"), BAD_ARCHIVE),
    "weight_size_past_end": (_patch_central("data/weights/weight_0", 20, "<II", HUGE, HUGE), BAD_ARCHIVE),
    "program_size_past_end": (_patch_central("models/model.json", 20, "<II", HUGE, HUGE), BAD_ARCHIVE),
    "program_offset_past_end": (_patch_central("models/model.json", 42, "<I", HUGE), BAD_ARCHIVE),
    "program_offset_wrong_record": (_patch_central("models/model.json", 42, "<I", 0), BAD_ARCHIVE),
    "central_name_length_past_end": (_patch_central("data/weights/weight_0", 28, "<H", 0xFFFF), BAD_ARCHIVE),
    "local_header_says_deflated": (_patch_local("models/model.json", 8, "<H", 8), BAD_ARCHIVE),
    # program JSON that parses but is not a program
    "no_schema_version": (lambda g, d: _edit_program(g, d, _replace_key(["schema_version"], _DELETE)), BAD_PROGRAM),
    "no_graph": (lambda g, d: _edit_program(g, d, _replace_key(["graph_module", "graph"], _DELETE)), BAD_PROGRAM),
    "nodes_not_a_list": (lambda g, d: _edit_program(g, d, _replace_key(["graph_module", "graph", "nodes"], {"a": 1})),
                         BAD_PROGRAM),
    "value_defined_twice": (lambda g, d: _edit_program(g, d, _duplicate_definition), BAD_PROGRAM),
    "value_used_before_definition": (lambda g, d: _edit_program(g, d, _use_before_definition), BAD_PROGRAM),
    "json_nested_too_deep": (lambda g, d: _with_program(g, d, "[" * 100000 + "]" * 100000), BAD_PROGRAM),
    "json_not_utf8": (lambda g, d: _with_program(g, d, _program_bytes(g).replace(b"aten.conv2d", b"aten.conv\xff2d")),
                      BAD_PROGRAM),
}

COMMANDS = ["eval-o", "eval-in-place", "train-o", "inspect", "inspect-json"]


@pytest.fixture(scope="module")
def bad_archives(tmp_path_factory, export_cache):
    """Builds every bad archive once: {case: path}."""
    root = tmp_path_factory.mktemp("bad")
    good = export_cache(*SOURCE)
    return {case: build(good, root / f"{case}.pt2") for case, (build, _) in CASES.items()}


def _assert_one_line_error(proc, status, input_name):
    assert proc.returncode == status, (
        f"expected exit {status}, got {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"stderr must be exactly one non-empty line, got:\n{proc.stderr!r}"
    assert input_name in lines[0], f"stderr does not name the input file {input_name!r}: {lines[0]!r}"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, command, bad_archives, tmp_path):
    status = CASES[case][1]
    work = tmp_path / "work"
    work.mkdir()
    bad = work / "bad_input.pt2"
    shutil.copyfile(bad_archives[case], bad)
    before = file_sha256(bad)
    out = work / "out.pt2"

    args = {
        "eval-o": ["eval", bad, "-o", out],
        "train-o": ["train", bad, "-o", out],
        "eval-in-place": ["eval", bad, "--in-place"],
        "inspect": ["inspect", bad],
        "inspect-json": ["inspect", bad, "--json"],
    }[command]
    proc = run_exmode(*args)

    _assert_one_line_error(proc, status, bad.name)
    assert not out.exists(), "no output file may be created on error"
    assert sorted(p.name for p in work.iterdir()) == [bad.name], "temporary files left behind"
    assert file_sha256(bad) == before, "the input file was modified"


def test_bad_archives_really_are_bad(bad_archives):
    """Keeps the cases honest (needs no exmode): torch.export.load rejects every case
    except the deflated ones, which torch 2.13 reads fine (miniz inflates) but which
    exmode's contract rejects (those are valid zips with a deflated record), and a few
    layout faults torch does not check. The program cases are zips with correct CRCs, so
    only the program is wrong."""
    import torch

    torch_reads = {"record_outside_top_folder", "no_data_version", "local_header_says_deflated"}
    for case, (_, status) in CASES.items():
        path = bad_archives[case]
        if status == BAD_PROGRAM or case.endswith("deflated"):
            with zipfile.ZipFile(path) as z:
                assert z.testzip() is None, case
        if case in torch_reads:
            continue
        if case.endswith("deflated"):
            with zipfile.ZipFile(path) as z:
                assert any(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist()), case
            continue
        with pytest.raises(Exception):
            torch.export.load(str(path))


def test_missing_input_file(tmp_path):
    missing = tmp_path / "does_not_exist.pt2"
    out = tmp_path / "out.pt2"
    proc = run_exmode("eval", missing, "-o", out)
    assert proc.returncode == 6, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and missing.name in lines[0], proc.stderr
    assert not out.exists()


def test_unwritable_output_directory(tmp_path, export_cache):
    src = export_cache(*SOURCE)
    out = tmp_path / "no_such_dir" / "out.pt2"
    proc = run_exmode("eval", src, "-o", out)
    assert proc.returncode == 6, proc
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("record", ["data/weights/weight_0", "models/model.json"])
def test_crc_mismatch_is_not_hidden(record, tmp_path, export_cache):
    """A record whose bytes no longer match its CRC-32 (bit rot, a bad copy) must not come
    out with a fresh, valid CRC: exmode either rejects the archive (exit 3) or leaves the
    damage detectable in its output. (Beyond the written contract; torch does not check
    CRCs, every zip tool does.)"""
    good = export_cache(*SOURCE)
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(record))
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    if record.endswith(".json"):  # keep the JSON valid: change the case of one letter in a string
        start += bytes(data[start:start + info.file_size]).index(b'"torch.ops.aten.conv2d') + 1
        data[start] = ord("T")
    else:
        data[start] ^= 0x01
    bad = tmp_path / "bitrot.pt2"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.pt2"
    proc = run_exmode("eval", bad, "-o", out)
    if proc.returncode == BAD_ARCHIVE:
        _assert_one_line_error(proc, BAD_ARCHIVE, bad.name)
        assert not out.exists()
        return
    assert proc.returncode == 0, proc
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is not None, "exmode gave a corrupted record a valid CRC"
