"""What every section gets: options, paths, binaries, and results shared between sections."""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .table import ratios_table


@dataclass
class Context:
    root: Path           # the repository
    cache: Path          # generated data
    exmode: Path         # the exmode tool
    bench_switch: Path   # exmode_bench_switch
    bench_floor: Path    # exmode_bench_floor
    micro: Path          # exmode_micro_benchmarks
    quick: bool
    repeat: int          # timed runs of each fast command
    slow_repeat: int     # timed runs of slow commands (the torch route)
    switch_repeat: int   # timed eval/train pairs of exmode's in-memory switch
    timeout: float       # seconds, per timed command
    sizes: list          # node counts of the scale section
    micro_min_time: float
    micro_repetitions: int
    ratios: object = field(default_factory=ratios_table)
    tables: list = field(default_factory=list)
    # Exmode file switches measured by the file and scale sections, for the memory
    # section: (label, archive, Series).
    file_switches: list = field(default_factory=list)
    done: set = field(default_factory=set)  # sections that ran

    @property
    def python(self):
        return sys.executable

    def log(self, message):
        print(message, file=sys.stderr, flush=True)
