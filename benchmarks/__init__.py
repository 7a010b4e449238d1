"""convodb's benchmark suite (issue 5): convodb against a hand-written minimal store and peers.

Run ``python -m benchmarks --quick`` from the benchmark venv; see ``benchmarks/README.md``.
"""
