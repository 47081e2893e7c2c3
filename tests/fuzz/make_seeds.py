"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/{archive,program}/) from real
archives: the shipped ones (tests/data/*.pt2, examples/*.pt2), small exports of the test
models in both modes (tests/python/models.py), a program in the functional IR of
run_decompositions(), one with a nested graph (torch.cond), a multi-program package, and a
few archive layouts torch does not write (zip64 end records, Python's zipfile, a directory
entry, a comment). Programs are each archive's models/*.json. Kept small: the whole
corpus stays under 2 MB.

    python3 tests/fuzz/make_seeds.py
"""

import io
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))
import models  # noqa: E402

ARCHIVES = HERE / "corpus" / "archive"
PROGRAMS = HERE / "corpus" / "program"
MAX_TOTAL = 2 * 1024 * 1024


def programs_of(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n.split("/", 1)[1]: z.read(n) for n in z.namelist() if "/models/" in n and n.endswith(".json")}


def add_archive(name, data):
    (ARCHIVES / f"{name}.pt2").write_bytes(data)
    for record, program in programs_of(data).items():
        stem = Path(record).stem
        (PROGRAMS / (f"{name}.json" if stem == "model" else f"{name}.{stem}.json")).write_bytes(program)


def export(module, x, mode, **kwargs):
    module = module.train() if mode == "train" else module.eval()
    ep = torch.export.export(module, (x,), **kwargs)
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return ep, buf.getvalue()


def rezip(data, **options):
    """The same records written by Python's zipfile (no alignment, no data descriptors)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", **options) as dst:
        for info in src.infolist():
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), src.read(info))
    return out.getvalue()


def layouts(data):
    """Archive layouts other writers produce, all of which exmode accepts."""
    top = zipfile.ZipFile(io.BytesIO(data)).namelist()[0].split("/")[0]
    yield "zipfile", rezip(data)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", allowZip64=True) as dst:
        dst.writestr(zipfile.ZipInfo(f"{top}/", date_time=(1980, 1, 1, 0, 0, 0)), b"")
        for info in src.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            with dst.open(zi, "w", force_zip64=True) as f:
                f.write(src.read(info))
        dst.comment = b"repacked"
    yield "zip64_directory_comment", out.getvalue()


class DropoutInCond(torch.nn.Module):
    """Refused: a mode-sensitive op inside a nested graph."""

    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: self.drop(t), lambda t: t.sin(), (x,))


class CondThenDropout(torch.nn.Module):
    """Switched: the nested graph holds no site."""

    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x):
        return self.drop(torch.cond(x.sum() > 0, lambda t: t.cos(), lambda t: t.sin(), (x,)))


class BatchNormInNoGrad(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(4)

    def forward(self, x):
        with torch.no_grad():
            return self.bn(x)


def main():
    for d in (ARCHIVES, PROGRAMS):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    for path in sorted((REPO / "tests" / "data").glob("*.pt2")) + sorted((REPO / "examples").glob("*.pt2")):
        add_archive(path.stem, path.read_bytes())
    dropout_bn = (REPO / "tests" / "data" / "dropout_bn_train.pt2").read_bytes()
    for layout, data in layouts(dropout_bn):
        (ARCHIVES / f"dropout_bn_train.{layout}.pt2").write_bytes(data)

    torch.manual_seed(0)
    for name in ["mlp_dropout", "dropout_inplace", "functional_dropout", "nested", "dropout3d", "alpha_dropout",
                 "feature_alpha_dropout", "with_constants", "instance_norm_stats", "instance_norm_no_stats",
                 "rrelu", "attention", "bn_no_running_stats_dropout"]:
        for mode in ("train", "eval"):
            module, x = models.ALL_MODELS[name]()
            _, data = export(module, x, mode)
            # The archives' records for these are the same as the shipped ones'; programs only.
            for record, program in programs_of(data).items():
                (PROGRAMS / f"{name}_{mode}.json").write_bytes(program)
    module, x = models.ALL_MODELS["mlp_dropout"]()
    ep, _ = export(module, x, "train")
    buf = io.BytesIO()
    torch.export.save(ep.run_decompositions(), buf)
    add_archive("mlp_dropout_decomposed", buf.getvalue())
    for factory in (DropoutInCond, CondThenDropout, BatchNormInNoGrad):
        _, data = export(factory(), torch.randn(3, 4), "train")
        add_archive(factory.__name__, data)
    with tempfile.TemporaryDirectory() as tmp:
        from torch.export.pt2_archive._package import package_pt2

        eps = {}
        for prog in ("bn_twice", "mlp_dropout"):
            module, x = models.MODELS[prog]()
            eps[prog] = torch.export.export(module.train(), (x,))
        package_pt2(f"{tmp}/multi.pt2", exported_programs=eps, extra_files={"notes.txt": "kept\n"})
        add_archive("two_programs", Path(f"{tmp}/multi.pt2").read_bytes())

    total = sum(p.stat().st_size for d in (ARCHIVES, PROGRAMS) for p in d.iterdir())
    print(f"{len(list(ARCHIVES.iterdir()))} archives, {len(list(PROGRAMS.iterdir()))} programs, {total} bytes")
    assert total < MAX_TOTAL, f"seed corpus too large: {total} bytes"


if __name__ == "__main__":
    main()
