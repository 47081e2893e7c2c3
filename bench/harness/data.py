"""The benchmark's data, generated into the cache directory only when missing."""

import sys
import zipfile
from pathlib import Path

from . import measure

BENCH = Path(__file__).resolve().parent.parent


def log(message):
    print(message, file=sys.stderr, flush=True)


def _generate(out, cmd):
    """Runs the generator `cmd`, which writes `out`; no timeout (exports can take minutes)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"  generating {out} ...")
    r = measure.run(cmd, timeout=None)
    if r.status != "ok" or not out.exists():
        raise SystemExit(f"bench: generating {out} failed:\n{r.stderr}")
    log(f"  generated {out} in {r.seconds:.1f} s")


def model_archive(cache, name):
    """bench/models.py model `name`, exported in train mode: CACHE/models/NAME_train.pt2."""
    out = cache / "models" / f"{name}_train.pt2"
    if not out.exists():
        _generate(out, [sys.executable, BENCH / "models.py", name, out])
    return out


def synthetic_archive(cache, nodes):
    """bench/make_synthetic.py archive of `nodes` nodes: CACHE/synthetic/nodes_N_train.pt2."""
    out = cache / "synthetic" / f"nodes_{nodes}_train.pt2"
    if not out.exists():
        tmp = out.with_name(out.stem + ".tmp.pt2")
        _generate(tmp, [sys.executable, BENCH / "make_synthetic.py", "--nodes", nodes, tmp])
        tmp.rename(out)
    return out


def program_json_size(archive):
    """Size in bytes of models/model.json in `archive` (all models/*.json if it has none)."""
    with zipfile.ZipFile(archive) as z:
        programs = {i.filename.split("/", 1)[-1]: i.file_size for i in z.infolist()
                    if i.filename.split("/", 1)[-1].startswith("models/")
                    and i.filename.endswith(".json")}
    return programs.get("models/model.json", sum(programs.values()))


def scratch(cache):
    """CACHE/out, empty: where timed commands write. Also clears what a killed command left."""
    d = cache / "out"
    d.mkdir(parents=True, exist_ok=True)
    for f in d.iterdir():
        if f.is_file():
            f.unlink()
    return d


def size_text(n):
    """Bytes as '165.5 MB' or '38 kB'."""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def remove(path):
    Path(path).unlink(missing_ok=True)
