"""``python -m convodb``: the same as the ``convodb`` console script."""

from __future__ import annotations

from convodb.cli import main

main()
