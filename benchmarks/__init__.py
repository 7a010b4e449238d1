"""convodb's benchmark suite (issue 5): convodb against hand-written yardsticks and peers.

Run ``python -m benchmarks --quick`` from the benchmark venv; see ``benchmarks/README.md``.
"""
