"""Tables printed as aligned text and written as markdown."""

from dataclasses import dataclass, field


@dataclass
class Table:
    title: str
    headers: list
    rows: list = field(default_factory=list)
    note: str = ""  # one paragraph under the table

    def add(self, *cells):
        self.rows.append([str(c) for c in cells])

    def text(self):
        widths = [max(len(str(x)) for x in col) for col in zip(self.headers, *self.rows)]
        line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
        out = [self.title, line(self.headers), line("-" * w for w in widths)]
        out += [line(r) for r in self.rows]
        if self.note:
            out.append(self.note)
        return "\n".join(out)

    def markdown(self):
        esc = lambda c: str(c).replace("|", "\\|")
        out = [f"#### {self.title}", "", "| " + " | ".join(map(esc, self.headers)) + " |",
               "|" + "---|" * len(self.headers)]
        out += ["| " + " | ".join(map(esc, r)) + " |" for r in self.rows]
        if self.note:
            out += ["", self.note]
        return "\n".join(out)


def ratios_table():
    """The summary: one row per ratio (or bounded number) with its target."""
    return Table("Ratios (medians measured in the same run)",
                 ["section", "measure", "value", "target", "met"])


def verdict(value, target_ok):
    """'yes' / 'no' when there is a value and a target, '' without a target."""
    if target_ok is None or value is None:
        return ""
    return "yes" if target_ok(value) else "no"
