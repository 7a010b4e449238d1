"""The OpenAI Agents SDK's session memory, stored in convodb.

```python
from convodb.integrations.openai_agents import ConvodbSession

session = ConvodbSession("support-42", database=db, user_id="alice")
result = await Runner.run(agent, "Hi!", session=session)
```

:class:`ConvodbSession` implements the SDK's ``Session`` protocol (``get_items``,
``add_items``, ``pop_item``, ``clear_session``). Items are stored as convodb messages, so the
conversation is also read by convodb's windows, formats, export and HTTP API; see
``_items`` for the mapping, and how it gives every item back exactly.

Needs the ``openai-agents`` extra: ``pip install 'convodb[openai-agents]'``.
"""

from __future__ import annotations

from ...errors import MissingDependencyError

try:
    import agents  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed where tests run
    raise MissingDependencyError("openai-agents", "openai-agents") from exc

from ._session import ConvodbSession

__all__ = ["ConvodbSession"]
