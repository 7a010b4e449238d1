"""The ``convodb`` command: run the HTTP service and manage its API keys.

```sh
convodb keys create --user alice    # prints the key once
convodb serve                       # http://127.0.0.1:8000, on ./convodb.db
```

Needs the ``cli`` extra (and ``server`` for ``convodb serve``). Like httpx's console script,
the command says which extra to install when one is missing instead of failing with an
``ImportError``.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``convodb`` console script."""
    try:
        from ._app import app
    except ImportError as exc:
        missing = exc.name or "typer"
        if missing.startswith("convodb"):
            raise
        print(
            f"The convodb command needs {missing!r}, which is not installed.\n"
            "Install the command line with: pip install 'convodb[cli]'",
            file=sys.stderr,
        )
        sys.exit(1)
    app()
