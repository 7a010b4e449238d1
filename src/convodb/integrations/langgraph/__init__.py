"""LangGraph checkpoints in convodb: ``ConvodbSaver`` (``pip install 'convodb[langgraph]'``).

```python
from convodb.integrations.langgraph import ConvodbSaver

graph = builder.compile(checkpointer=ConvodbSaver(database=db, user_id="alice"))
```

Each thread is a convodb conversation of ``user_id``; its ``messages`` are convodb messages,
which convodb's windows, formats, export and HTTP API read like any others.
"""

from __future__ import annotations

try:
    import langgraph.checkpoint.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    from ...errors import MissingDependencyError

    raise MissingDependencyError("langgraph-checkpoint", "langgraph") from exc

from ._saver import ConvodbSaver

__all__ = ["ConvodbSaver"]
