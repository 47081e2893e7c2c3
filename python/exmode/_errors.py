"""The exceptions exmode raises: one class per exit status of the `exmode` command.

The C++ core raises these (its exmode::Error kinds map onto them); each message is the
one line the command prints after "exmode: ".
"""


class Error(Exception):
    """Base of every exmode error. `exit_status` is what the `exmode` command exits with."""

    exit_status = 1


class UsageError(Error):
    """A bad argument: an unknown mode, a malformed module type list."""

    exit_status = 2


class BadArchiveError(Error):
    """Not a zip, truncated, compressed or encrypted records, bad names, no program."""

    exit_status = 3


class BadProgramError(Error):
    """Malformed program JSON, an unknown schema major, broken graph invariants, a limit."""

    exit_status = 4


class UnsupportedError(Error):
    """A valid program exmode cannot switch exactly, or a warned switch with strict=True."""

    exit_status = 5

    def __init__(self, message, warnings=None):
        super().__init__(message)
        # With strict=True: the warnings of the refused switch, one list per program.
        self.warnings = warnings or []


class ExmodeIOError(Error, OSError):
    """Reading or writing failed at the OS level (also an OSError)."""

    exit_status = 6
