"""The benchmark harness behind bench/bench.py: measuring, data, tables and the sections."""
