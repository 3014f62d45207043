"""``make bench``: Emanet measured against PostgreSQL's own bank-transfer benchmark on the same machine.

``python -m bench.run`` (``QUICK=1`` for a two-minute version) writes docs/benchmarks.md and its plots.
"""
