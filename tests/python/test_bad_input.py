"""Bad input: broken archives (exit 3) and broken programs (exit 4). For every case and
every command: the right exit status, exactly one non-empty line on stderr naming the
input file and saying what is wrong (a substring per case), no output file, no temporary
files left behind, the input unchanged. Where the exmode binary is not sanitized, it runs
with its address space limited, so a size declared far beyond the file that exmode tried to
allocate would fail the case."""

import json
import resource
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import archive_records, exmode_path, file_sha256, read_program, repack, run_exmode

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


def _cycle(program):
    """conv2d reads batch_norm's output, and batch_norm reads conv2d's: a cycle."""
    nodes = program["graph_module"]["graph"]["nodes"]
    conv = next(n for n in nodes if n["target"] == "torch.ops.aten.conv2d.default")
    conv["inputs"][0]["arg"] = {"as_tensor": {"name": "batch_norm"}}


def _unknown_argument_kind(program):
    nodes = program["graph_module"]["graph"]["nodes"]
    bn = next(n for n in nodes if n["target"] == "torch.ops.aten.batch_norm.default")
    bn["inputs"][0]["arg"] = {"as_mystery": {"name": "conv2d"}}


def _signature_input_missing(program):
    spec = program["graph_module"]["signature"]["input_specs"][0]
    (kind, payload), = spec.items()
    payload["arg"]["name"] = "no_such_value"


def _signature_output_missing(program):
    spec = program["graph_module"]["signature"]["output_specs"][-1]
    spec["user_output"]["arg"]["as_tensor"]["name"] = "no_such_value"


def _node_field(field, value):
    def edit(program):
        program["graph_module"]["graph"]["nodes"][0][field] = value

    return edit


def _program_text_edit(old, new):
    """Replaces the first `old` in the program's text (for JSON json.dumps cannot write)."""
    def make(good, dst):
        text = _program_bytes(good)
        assert old in text, old
        return _with_program(good, dst, text.replace(old, new, 1))

    return make


DEEP = 100000
# A node member 100000 arrays deep, which the reader keeps as text without descending.
_deep_node_member = _program_text_edit(b'"nodes": [{', b'"nodes": [{"deep": ' + b"[" * DEEP + b"]" * DEEP + b", ")
# Argument maps nested 100000 deep: nested graphs the reader descends into itself.
_NESTED_GRAPH = b'{"as_graph": {"graph": {"nodes": [{"target": "t", "inputs": [{"name": "g", "arg": '
_deep_nested_graphs = _program_text_edit(
    b'"inputs": [{"name": "input", "arg": ',
    b'"inputs": [{"name": "deep", "arg": ' + _NESTED_GRAPH * DEEP + b'{"as_none": true}'
    + b"}]}]}}}" * DEEP + b', "kind": 1}, {"name": "input", "arg": ')


def _repeated_node_field(good, dst):
    """The batch norm node with "outputs" twice (the first a fresh value with tensor metadata)."""
    text = _program_bytes(good).decode()
    program = json.loads(text)
    nodes = program["graph_module"]["graph"]["nodes"]
    bn = next(n for n in nodes if n["target"] == "torch.ops.aten.batch_norm.default")
    outputs = json.dumps(bn["outputs"])
    meta = json.dumps(program["graph_module"]["graph"]["tensor_values"][bn["outputs"][0]["as_tensor"]["name"]])
    at = text.index('"outputs": ' + outputs, text.index('"torch.ops.aten.batch_norm.default"'))
    text = text[:at] + '"outputs": [{"as_tensor": {"name": "extra"}}], ' + text[at:]
    text = text.replace('"tensor_values": {', '"tensor_values": {"extra": ' + meta + ", ", 1)
    return _with_program(good, dst, text)


# ---------------------------------------------------------------- zip surgery


def _end_record(data):
    """Offset of the end of central directory record (the archives here have no comment)."""
    at = len(data) - 22
    assert data[at:at + 4] == b"PK\x05\x06"
    return at


def _split_directory(data):
    """(bytes before the central directory, [central directory entries as bytearrays])."""
    end = _end_record(data)
    count, size, offset = struct.unpack("<HII", data[end + 10:end + 20])
    entries, pos = [], offset
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[pos + 28:pos + 34])
        nxt = pos + 46 + name_len + extra_len + comment_len
        entries.append(bytearray(data[pos:nxt]))
        pos = nxt
    return data[:offset], entries


def _zip64_archive(data, entries=None, directory_size=None, directory_offset=None, locator_offset=None,
                   edit_entries=None):
    """The archive with zip64 end records (zip64 end of central directory, locator, and an end
    record whose fields are all maxed out), optionally lying in the given fields, after
    `edit_entries(entries)` changed central directory entries."""
    records, central = _split_directory(data)
    if edit_entries:
        edit_entries(central)
    directory = b"".join(central)
    count = len(central) if entries is None else entries
    record_offset = len(records) + len(directory)
    zip64_end = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count,
                            len(directory) if directory_size is None else directory_size,
                            len(records) if directory_offset is None else directory_offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, record_offset if locator_offset is None else locator_offset, 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return records + directory + zip64_end + locator + end


def _zip64(**fields):
    def make(good, dst):
        dst.write_bytes(_zip64_archive(good.read_bytes(), **fields))
        return dst

    return make


def _entry_named(entries, suffix):
    for entry in entries:
        name_len = struct.unpack("<H", entry[28:30])[0]
        if bytes(entry[46:46 + name_len]).endswith(suffix.encode()):
            return entry
    raise KeyError(suffix)


def _zip64_fields(suffix, sizes=None, offset=None, extra_values=None):
    """Edits the entry of the record ending in `suffix`: maxes out its sizes (when `sizes`)
    and local header offset (when `offset`) and appends a zip64 extra field holding
    `extra_values` (64-bit), or none when that is None."""
    def edit(entries):
        entry = _entry_named(entries, suffix)
        if sizes:
            entry[20:28] = struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF)
        if offset:
            entry[42:46] = struct.pack("<I", 0xFFFFFFFF)
        if extra_values is not None:
            extra = struct.pack("<HH", 1, 8 * len(extra_values)) + b"".join(struct.pack("<Q", v) for v in extra_values)
            name_len, extra_len, comment_len = struct.unpack("<HHH", entry[28:34])
            assert comment_len == 0
            entry[30:32] = struct.pack("<H", extra_len + len(extra))
            entry.extend(extra)

    return edit


def _real_zip64_values(good, suffix):
    with zipfile.ZipFile(good) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    return info.file_size, info.header_offset


def _zip64_entry(suffix, sizes=False, offset=False, size_value=None, offset_value=None, short=False):
    """A zip64 archive whose entry for `suffix` takes sizes and/or offset from a zip64 extra
    field, with the values given (or the true ones); `short` leaves the last value out."""
    def make(good, dst):
        size, header = _real_zip64_values(good, suffix)
        values = []
        if sizes:
            values += [size if size_value is None else size_value] * 2
        if offset:
            values.append(header if offset_value is None else offset_value)
        if short:
            values = values[:-1]
        dst.write_bytes(_zip64_archive(good.read_bytes(), edit_entries=_zip64_fields(suffix, sizes, offset, values)))
        return dst

    return make


def _zip64_entry_without_extra(suffix):
    def make(good, dst):
        dst.write_bytes(_zip64_archive(good.read_bytes(), edit_entries=_zip64_fields(suffix, sizes=True)))
        return dst

    return make


def _extra_record(name_of, data=b"x", duplicate=None):
    """Repacked by zipfile with one more record named name_of(top folder)."""
    def make(good, dst):
        repack(good, dst, writer="zipfile")
        with zipfile.ZipFile(dst) as z:
            top = z.namelist()[0].split("/")[0]
        with zipfile.ZipFile(dst, "a") as z:
            name = name_of(top)
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
        return dst

    return make


def _grow_record(suffix, by):
    """Declares the record `by` bytes longer than it is, in both headers: its data then runs
    over the next record's local header."""
    def make(good, dst):
        data = bytearray(good.read_bytes())
        with zipfile.ZipFile(good) as z:
            info = next(i for i in z.infolist() if i.filename.endswith(suffix))
        pos = _central_entry(data, good, suffix)
        data[pos + 20:pos + 28] = struct.pack("<II", info.file_size + by, info.file_size + by)
        dst.write_bytes(bytes(data))
        return dst

    return make


def _plain_end(entries=None, directory_size=None, directory_offset=None):
    """The archive with only the classic end record (torch's writer adds zip64 end records
    to every archive, which exmode then reads instead), lying in the given fields."""
    def make(good, dst):
        records, central = _split_directory(good.read_bytes())
        directory = b"".join(central)
        count = len(central) if entries is None else entries
        end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count,
                          len(directory) if directory_size is None else directory_size,
                          len(records) if directory_offset is None else directory_offset, 0)
        dst.write_bytes(records + directory + end)
        return dst

    return make


HUGE = 0x7FFFFFF0
HUGE64 = 1 << 62

# name: (builder(good, dst) -> dst, expected exit status, substring(s) of the message)
CASES = {
    # not a zip, or a truncated one
    "not_a_zip": (lambda g, d: (d.write_bytes(b"this is not a zip archive\n" * 40), d)[1], BAD_ARCHIVE,
                  "not a zip archive"),
    "empty": (lambda g, d: (d.write_bytes(b""), d)[1], BAD_ARCHIVE, "empty file"),
    "truncated_10": (_truncate(lambda n: 10), BAD_ARCHIVE, "truncated zip archive"),
    "truncated_1000": (_truncate(lambda n: 1000), BAD_ARCHIVE, "truncated zip archive"),
    "truncated_half": (_truncate(lambda n: n // 2), BAD_ARCHIVE, "truncated zip archive"),
    "truncated_central_directory": (_truncate(lambda n: n - 300), BAD_ARCHIVE, "truncated zip archive"),
    "truncated_end_record": (_truncate(lambda n: n - 10), BAD_ARCHIVE, "truncated zip archive"),
    "truncated_last_byte": (_truncate(lambda n: n - 1), BAD_ARCHIVE, "truncated zip archive"),
    # zip, but not a PT2 archive exmode can read
    "no_program_zipfile": (lambda g, d: repack(g, d, drop={"models/model.json"}, writer="zipfile"), BAD_ARCHIVE,
                           "no program in the archive"),
    "no_program_torch_writer": (lambda g, d: repack(g, d, drop={"models/model.json"}), BAD_ARCHIVE,
                                "no program in the archive"),
    "all_records_deflated": (lambda g, d: repack(g, d, writer="zipfile", compression=zipfile.ZIP_DEFLATED),
                             BAD_ARCHIVE, "is compressed (method 8); only stored records are supported"),
    "program_record_deflated": (lambda g, d: repack(g, d, writer="zipfile", compress_only={"models/model.json"}),
                                BAD_ARCHIVE, "models/model.json is compressed (method 8)"),
    "record_outside_top_folder": (_stray_record, BAD_ARCHIVE, "record stray.txt is not inside a top-level folder"),
    "no_data_version": (lambda g, d: repack(g, d, drop={".data/version"}, writer="zipfile"), BAD_ARCHIVE,
                        "no .data/version record"),
    "duplicate_record_name": (_extra_record(lambda top: f"{top}/archive_format"), BAD_ARCHIVE,
                              "/archive_format appears more than once"),
    "record_name_with_dot_dot": (_extra_record(lambda top: f"{top}/../evil.txt"), BAD_ARCHIVE,
                                 "/../evil.txt has a '..' path component"),
    "record_name_absolute": (_extra_record(lambda top: f"/{top}/evil.txt"), BAD_ARCHIVE,
                             "/evil.txt has an absolute path"),
    # the zip structure lies about offsets and sizes
    "weight_size_past_end": (_patch_central("data/weights/weight_0", 20, "<II", HUGE, HUGE), BAD_ARCHIVE,
                             f"size {HUGE}) runs past the end of the record area"),
    "program_size_past_end": (_patch_central("models/model.json", 20, "<II", HUGE, HUGE), BAD_ARCHIVE,
                              f"size {HUGE}) runs past the end of the record area"),
    "program_offset_past_end": (_patch_central("models/model.json", 42, "<I", HUGE), BAD_ARCHIVE,
                                f"local header at offset {HUGE} is past the end"),
    "program_offset_wrong_record": (_patch_central("models/model.json", 42, "<I", 0), BAD_ARCHIVE,
                                    "local header name does not match the central directory"),
    "central_name_length_past_end": (_patch_central("data/weights/weight_0", 28, "<H", 0xFFFF), BAD_ARCHIVE,
                                     "runs past the end of the central directory"),
    "central_directory_offset_past_end": (_plain_end(directory_offset=HUGE), BAD_ARCHIVE,
                                          f"central directory (offset {HUGE}, size"),
    "central_directory_size_past_end": (_plain_end(directory_size=HUGE), BAD_ARCHIVE,
                                        f"size {HUGE}) runs past the end of the file"),
    "central_directory_count_lies": (_plain_end(entries=0xFFF0), BAD_ARCHIVE,
                                     "central directory declares 65520 records but has room for at most"),
    "local_header_says_deflated": (_patch_local("models/model.json", 8, "<H", 8), BAD_ARCHIVE,
                                   "local header method 8 differs from the central directory"),
    "record_runs_into_next_record": (_grow_record("data/weights/weight_0", 100), BAD_ARCHIVE,
                                     ("/data/weights/weight_0 (offset 0 to ", ") overlaps record ")),
    # zip64 records that lie
    "zip64_locator_past_end": (_zip64(locator_offset=HUGE64), BAD_ARCHIVE,
                               f"zip64 end of central directory record at offset {HUGE64} is past the end"),
    "zip64_record_missing": (_zip64(locator_offset=0), BAD_ARCHIVE,
                             "no zip64 end of central directory record at offset 0"),
    "zip64_directory_offset_past_end": (_zip64(directory_offset=HUGE64), BAD_ARCHIVE,
                                        f"central directory (offset {HUGE64}, size"),
    "zip64_directory_size_past_end": (_zip64(directory_size=HUGE64), BAD_ARCHIVE,
                                      f"size {HUGE64}) runs past the end of the file"),
    "zip64_count_lies": (_zip64(entries=1 << 40), BAD_ARCHIVE,
                         f"central directory declares {1 << 40} records but has room for at most"),
    "zip64_record_size_past_end": (_zip64_entry("data/weights/weight_0", sizes=True, size_value=HUGE64),
                                   BAD_ARCHIVE, f"size {HUGE64}) runs past the end of the record area"),
    "zip64_record_offset_past_end": (_zip64_entry("models/model.json", offset=True, offset_value=HUGE64),
                                     BAD_ARCHIVE, f"local header at offset {HUGE64} is past the end"),
    "zip64_extra_field_missing": (_zip64_entry_without_extra("models/model.json"), BAD_ARCHIVE,
                                  "models/model.json: zip64 extra field missing"),
    "zip64_extra_field_too_short": (_zip64_entry("models/model.json", sizes=True, offset=True, short=True),
                                    BAD_ARCHIVE, "models/model.json: zip64 extra field is too short"),
    # program JSON that is not JSON, or not a program
    "malformed_json_truncated": (lambda g, d: _with_program(g, d, _program_bytes(g)[:-40]), BAD_PROGRAM,
                                 "models/model.json: malformed JSON"),
    "malformed_json_garbage": (lambda g, d: _with_program(g, d, '{"graph_module": {,,}'), BAD_PROGRAM,
                               "models/model.json: malformed JSON"),
    "json_array": (lambda g, d: _with_program(g, d, "[1, 2, 3]"), BAD_PROGRAM, "the program is not a JSON object"),
    "json_number": (lambda g, d: _with_program(g, d, "42"), BAD_PROGRAM, "the program is not a JSON object"),
    "json_nested_too_deep": (lambda g, d: _with_program(g, d, "[" * DEEP + "]" * DEEP), BAD_PROGRAM,
                             "the program is not a JSON object"),
    "json_nested_too_deep_in_a_node": (_deep_node_member, BAD_PROGRAM, "nested too deeply"),
    "nested_graphs_too_deep": (_deep_nested_graphs, BAD_PROGRAM, "nested too deeply"),
    "json_not_utf8": (lambda g, d: _with_program(g, d, _program_bytes(g).replace(b"aten.conv2d", b"aten.conv\xff2d")),
                      BAD_PROGRAM, "models/model.json: malformed JSON"),
    "unknown_schema_major": (lambda g, d: _edit_program(g, d, _schema_major), BAD_PROGRAM,
                             "unsupported schema version 99."),
    "no_schema_version": (lambda g, d: _edit_program(g, d, _replace_key(["schema_version"], _DELETE)), BAD_PROGRAM,
                          "the program has no field 'schema_version'"),
    "no_graph": (lambda g, d: _edit_program(g, d, _replace_key(["graph_module", "graph"], _DELETE)), BAD_PROGRAM,
                 "graph_module has no field 'graph'"),
    "nodes_not_a_list": (lambda g, d: _edit_program(g, d, _replace_key(["graph_module", "graph", "nodes"], {"a": 1})),
                         BAD_PROGRAM, "graph.nodes is not a JSON array"),
    "node_target_not_a_string": (lambda g, d: _edit_program(g, d, _node_field("target", 5)), BAD_PROGRAM,
                                 "node target is not a string"),
    "node_inputs_not_a_list": (lambda g, d: _edit_program(g, d, _node_field("inputs", {})), BAD_PROGRAM,
                               "node 'conv2d' inputs is not a JSON array"),
    "node_without_outputs": (lambda g, d: _edit_program(g, d, _replace_key(["graph_module", "graph", "nodes", 0,
                                                                            "outputs"], _DELETE)),
                             BAD_PROGRAM, "has no field 'outputs'"),
    "unknown_argument_kind": (lambda g, d: _edit_program(g, d, _unknown_argument_kind), BAD_PROGRAM, "as_mystery"),
    # graph invariants
    "dangling_node_input": (lambda g, d: _edit_program(g, d, _dangling), BAD_PROGRAM,
                            "node 'batch_norm' input 'input' refers to 'no_such_value', which is not defined"),
    "dangling_graph_output": (lambda g, d: _edit_program(g, d, _dangling_output), BAD_PROGRAM,
                              "graph output refers to 'no_such_value', which is not defined"),
    "value_defined_twice": (lambda g, d: _edit_program(g, d, _duplicate_definition), BAD_PROGRAM,
                            "value 'conv2d' is defined twice"),
    "value_used_before_definition": (lambda g, d: _edit_program(g, d, _use_before_definition), BAD_PROGRAM,
                                     "uses 'batch_norm' before it is defined"),
    "cycle": (lambda g, d: _edit_program(g, d, _cycle), BAD_PROGRAM,
              "node 'conv2d' input 'input' uses 'batch_norm' before it is defined"),
    "signature_input_names_no_value": (lambda g, d: _edit_program(g, d, _signature_input_missing), BAD_PROGRAM,
                                       "input spec refers to 'no_such_value'"),
    "signature_output_names_no_value": (lambda g, d: _edit_program(g, d, _signature_output_missing), BAD_PROGRAM,
                                        "output spec refers to 'no_such_value'"),
    "node_field_repeated": (_repeated_node_field, BAD_PROGRAM, "node 'batch_norm'"),
}

# Cases exmode gets wrong today, with the reason (a bug outside the archive layer).
XFAIL = {}  # cases expected to fail because of an open bug: none

COMMANDS = ["eval-o", "eval-in-place", "train-o", "inspect", "inspect-json"]


@pytest.fixture(scope="module")
def bad_archives(tmp_path_factory, export_cache):
    """Builds every bad archive once: {case: path}."""
    root = tmp_path_factory.mktemp("bad")
    good = export_cache(*SOURCE)
    return {case: build(good, root / f"{case}.pt2") for case, (build, *_) in CASES.items()}


# The address space a non-sanitized exmode gets here: far more than these small archives
# need, far less than any size they declare.
ADDRESS_SPACE_LIMIT = 1 << 30


def _sanitized(binary):
    """Whether the exmode binary is built with AddressSanitizer, which reserves terabytes
    of address space for itself and so cannot run under ADDRESS_SPACE_LIMIT."""
    return b"__asan_init" in Path(binary).read_bytes()


@pytest.fixture(scope="module")
def run_limited():
    """Runs exmode with its address space limited (unless sanitized)."""
    binary = exmode_path()
    limit = None if _sanitized(binary) else ADDRESS_SPACE_LIMIT

    def run(*args):
        def preexec():
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        return subprocess.run([str(binary)] + [str(a) for a in args], capture_output=True, text=True, timeout=60,
                              preexec_fn=preexec if limit else None)

    return run


def _assert_one_line_error(proc, status, input_name, message=""):
    assert proc.returncode == status, (
        f"expected exit {status}, got {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"stderr must be exactly one non-empty line, got:\n{proc.stderr!r}"
    assert input_name in lines[0], f"stderr does not name the input file {input_name!r}: {lines[0]!r}"
    for part in message if isinstance(message, tuple) else (message,):
        assert part in lines[0], f"stderr does not say {part!r}: {lines[0]!r}"


def _case_params():
    return [pytest.param(case, marks=pytest.mark.xfail(reason=XFAIL[case], strict=True)) if case in XFAIL else case
            for case in CASES]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", _case_params())
def test_bad_input(case, command, bad_archives, run_limited, tmp_path):
    _, status, message = CASES[case]
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
    proc = run_limited(*args)

    _assert_one_line_error(proc, status, bad.name, message)
    assert not out.exists(), "no output file may be created on error"
    assert sorted(p.name for p in work.iterdir()) == [bad.name], "temporary files left behind"
    assert file_sha256(bad) == before, "the input file was modified"


def test_rebuilt_end_records_are_read(export_cache, tmp_path):
    """The baseline of the cases that rebuild the end records: the same archive with a
    truthful classic end record only, or truthful zip64 end records and zip64 extra fields
    (sizes and offset), is accepted, so each case fails for its lie."""
    good = export_cache(*SOURCE)
    for name, build in {"plain": _plain_end(), "end": _zip64(), "sizes": _zip64_entry("data/weights/weight_0", sizes=True),
                        "offset": _zip64_entry("models/model.json", offset=True),
                        "both": _zip64_entry("models/model.json", sizes=True, offset=True)}.items():
        path = build(good, tmp_path / f"zip64_{name}.pt2")
        with zipfile.ZipFile(path) as z:
            assert z.testzip() is None, name
        proc = run_exmode("inspect", path)
        assert proc.returncode == 0, (name, proc.stderr)


def test_bad_archives_really_are_bad(bad_archives):
    """Keeps the cases honest (needs no exmode): torch.export.load rejects every case
    except the deflated ones, which torch 2.13 reads fine (miniz inflates) but which
    exmode's contract rejects (those are valid zips with a deflated record), and a few
    layout faults torch does not check. The program cases are zips with correct CRCs, so
    only the program is wrong."""
    import torch

    torch_reads = {"record_outside_top_folder", "no_data_version", "local_header_says_deflated",
                   "duplicate_record_name", "record_name_with_dot_dot",  # torch ignores records it does not know
                   "record_runs_into_next_record",  # torch does not check weights' sizes against the layout
                   "node_field_repeated"}  # Python's json keeps the last of repeated keys
    for case, (_, status, _) in CASES.items():
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
