"""exmode.Archive: a PT2 archive opened for switching, over the C++ core's Model."""

import os
import tempfile
from pathlib import Path

from . import _core
from ._errors import UnsupportedError
from ._rules import core_rules

_MODES = ("train", "eval")


class Archive:
    """A PT2 archive (`torch.export.save` output), parsed and ready to switch.

    Made by `exmode.open(path)` or `exmode.from_bytes(data)`. Switches change the programs
    in memory; nothing is written until `save()` (or read back with `to_bytes()`).
    """

    def __init__(self, core):
        self._core = core

    @property
    def path(self):
        """The file it was opened from, or None for an archive given as bytes."""
        path = self._core.path
        return None if path is None else Path(path)

    @property
    def programs(self):
        """Program names ("model" for models/model.json)."""
        return self._core.program_names()

    @property
    def mode(self):
        """"train", "eval", "mixed" (programs or sites disagree) or "none" (no site)."""
        return self._core.mode()

    @property
    def training(self):
        """True when the mode is "train"."""
        return self.mode == "train"

    @property
    def modified(self):
        """True when a switch changed some program since it was opened."""
        return self._core.modified()

    def eval(self, strict=False):
        """Moves every program to evaluation mode; returns one report per program."""
        return self._switch("eval", strict)

    def train(self, strict=False):
        """Moves every program to training mode; returns one report per program."""
        return self._switch("train", strict)

    def inspect(self):
        """The programs of `exmode inspect --json`: name, mode, sites and warnings each."""
        return self._core.inspect()

    def save(self, path, *, sync=False):
        """Writes the archive to `path` atomically (a temporary file beside it, renamed).

        sync=True also flushes the file and its directory to disk, as `--sync` does.
        """
        self._core.save(os.fspath(path), sync)

    def to_bytes(self):
        """The archive `save()` would write, as bytes."""
        with tempfile.TemporaryDirectory(prefix="exmode-") as directory:
            target = Path(directory) / "archive.pt2"
            self._core.save(str(target), False)
            return target.read_bytes()

    def _switch(self, mode, strict):
        if strict:
            # Checked before switching, so a refused switch leaves every program as it was.
            found = [p for p in self._core.switch_warnings(mode) if p["warnings"]]
            count = sum(len(p["warnings"]) for p in found)
            if count:
                where = self.path if self.path is not None else "<bytes>"
                raise UnsupportedError(
                    f"{where}: strict: the switch to {mode} cannot be exact "
                    f"({count} warning{'' if count == 1 else 's'}); nothing changed",
                    found,
                )
        return self._core.switch_mode(mode)

    def __repr__(self):
        where = self.path if self.path is not None else "<bytes>"
        return f"<exmode.Archive {where} mode={self.mode}>"


def _module_types(module_types):
    return [os.fspath(p) for p in module_types]


def open(path, *, module_types=(), rules=None):  # noqa: A001 - the package's entry point, as gzip.open
    """Opens the PT2 archive at `path`. module_types: extra lists of mode-dependent module
    types (the format of data/mode_dependent_modules.txt), as `--module-types`. rules: user
    rules (docs/RULES.md), as `--rules`: a rule file's path, an exmode.Rules, or a list of
    them; every switch and inspect of the archive uses them."""
    return Archive(_core.Model.open(os.fspath(path), _module_types(module_types),
                                    core_rules(rules)))


def from_bytes(data, *, module_types=(), rules=None):
    """Opens a PT2 archive held in memory (bytes, bytearray or memoryview)."""
    return Archive(_core.Model.from_bytes(bytes(data), _module_types(module_types),
                                          core_rules(rules)))
