"""The health routes: liveness and readiness, without credentials."""

from typing import Annotated

from fastapi import Depends, FastAPI

from convodb import Database

from ._routing import STORE_PROBLEMS, get_database, problems
from ._schemas import Health

__all__ = ["add_health_routes"]


def add_health_routes(app: FastAPI) -> None:
    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """The process is up. Touches nothing else."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        summary="Readiness",
        responses=problems(*STORE_PROBLEMS),
    )
    async def readyz(db: Annotated[Database, Depends(get_database)]) -> dict[str, str]:
        """The database answers and has the schema this server needs; 503 otherwise."""
        await db.ping()
        return {"status": "ready"}
