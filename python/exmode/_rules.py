"""exmode.Rules: user rules (docs/RULES.md), read from rule files or from text."""

import os

from . import _core


class Rules:
    """A set of user rules: op rules for custom ops, attention_dropout rules for the
    train-mode p an eval export did not record (docs/RULES.md).

    Rules(path, ...) reads rule files; Rules.from_text(text) reads rules given as text.
    A malformed rule raises exmode.UsageError naming the file (or source) and line.
    """

    def __init__(self, *paths):
        self._core = _core.Rules()
        for path in paths:
            self._core.add_file(os.fspath(path))

    @classmethod
    def from_text(cls, text, source="<rules>"):
        """Rules written in `text`; messages name it `source`."""
        rules = cls()
        rules._core.add_text(text, source)
        return rules

    def __bool__(self):
        return not self._core.empty()

    def __str__(self):
        return self._core.text()

    def __repr__(self):
        lines = self._core.text().count("\n")
        return f"<exmode.Rules {lines} rule{'' if lines == 1 else 's'}>"


def core_rules(rules):
    """The core's rule set for a `rules=` argument: None, a path (str or os.PathLike: a str
    is always a path, never rule text), a Rules, or a list or tuple of those. None for none."""
    if rules is None:
        return None
    if isinstance(rules, Rules):
        return rules._core if rules else None
    items = list(rules) if isinstance(rules, (list, tuple)) else [rules]
    combined = _core.Rules()
    for item in items:
        if isinstance(item, Rules):
            combined.add_rules(item._core)
        elif isinstance(item, (str, bytes, os.PathLike)):
            combined.add_file(os.fsdecode(item))
        else:
            raise TypeError(f"rules: expected a path, an exmode.Rules or a list of them, "
                            f"got {type(item).__name__}")
    return None if combined.empty() else combined
