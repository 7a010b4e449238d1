"""convodb's HTTP service: the store as a versioned REST API with real authentication.

```python
from convodb.server import Settings, create_app

app = create_app(Settings(database_url="sqlite:///chat.db"))
```

Run it with ``convodb serve`` (see ``convodb serve --help``), or any ASGI server:
``uvicorn --factory convodb.server:create_app`` reads the ``CONVODB_*`` variables.
Needs the ``server`` extra: ``pip install 'convodb[server]'``.
"""

from __future__ import annotations

from convodb.errors import MissingDependencyError

try:
    import fastapi  # noqa: F401
    import fastapi_offline  # noqa: F401
    import jwt  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise MissingDependencyError(exc.name or "fastapi", "server") from exc

from ._app import create_app
from ._settings import ENVIRONMENT, Settings

__all__ = ["ENVIRONMENT", "Settings", "create_app"]
