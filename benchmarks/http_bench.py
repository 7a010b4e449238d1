"""The HTTP part of issue 5: ``convodb serve`` against a minimal FastAPI + raw-driver endpoint.

It depends on the HTTP service (``convodb.server.create_app``), which is being built in
parallel. Until that exists this module reports "n/a" and the rest of the suite runs as is.
When it lands, this is where to add: uvicorn on a free loopback port for each app, a bounded
number of concurrent httpx clients for a bounded time, requests/s and p99 for append and
agent-input, and the ratio against the minimal endpoint (target >= 0.6x).
"""

from __future__ import annotations

import importlib
from typing import Any


def server_available() -> bool:
    try:
        server = importlib.import_module("convodb.server")
    except ImportError:
        return False
    return hasattr(server, "create_app")


async def run(quick: bool) -> dict[str, Any]:
    if not server_available():
        return {"note": "n/a: convodb.server.create_app does not exist yet"}
    return {"note": "n/a: convodb.server.create_app exists; the HTTP workload is not written yet"}
