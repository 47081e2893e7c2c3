"""exmode: switch exported PyTorch programs (.pt2 archives) between train and eval mode.

    import exmode
    archive = exmode.open("model.pt2")
    for report in archive.eval():
        print(report["program"], report["before"], "->", report["after"])
    archive.save("model_eval.pt2")

Needs no torch: it reads and writes the saved archive itself.
"""

# _errors first: the C++ core looks its exception classes up when it is imported.
from ._errors import (
    BadArchiveError,
    BadProgramError,
    Error,
    ExmodeIOError,
    UnsupportedError,
    UsageError,
)
from . import _core
from ._archive import Archive, from_bytes, open  # noqa: A004
from ._rules import Rules

__version__ = _core.__version__

__all__ = [
    "Archive",
    "BadArchiveError",
    "BadProgramError",
    "Error",
    "ExmodeIOError",
    "Rules",
    "UnsupportedError",
    "UsageError",
    "__version__",
    "from_bytes",
    "open",
]
