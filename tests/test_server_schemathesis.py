"""schemathesis against the app's own OpenAPI schema, over TCP to a real ``convodb serve``.

Every operation gets schema-valid and schema-invalid requests, half of them aimed at a
conversation that exists, and each response must: not be a 5xx, have a documented status and
content type, match the documented schema, and reject schema-invalid input with a 4xx.

``positive_data_acceptance`` (every schema-valid request gets a 2xx) is left out on purpose:
the schema documents types and shapes, but some rules are the service's alone and cannot be
written in JSON Schema (a tool message needs ``tool_call_id``, call ids are unique within a
message, NUL is refused, sizes are in UTF-8 bytes). Such requests get a documented 422.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from convodb.server import Settings, create_app
from tests._http import JWT_SECRET, Server, cli, start_server
from tests.conftest import BACKENDS

SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(jwt_secret=JWT_SECRET)).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations() if isinstance(result, Ok)]
EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server on each database, and headers with a key for it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'convodb.db'}"
    else:  # the run's own database on that server
        fixture = {"postgresql": "postgres_url", "mariadb": "mariadb_url"}[request.param]
        url = str(request.getfixturevalue(fixture))
    env = {"CONVODB_DATABASE_URL": url, "CONVODB_JWT_SECRET": JWT_SECRET}
    # A service key naming its user per request: DELETE /v1/me, fuzzed like every operation,
    # erases the user's own keys, and a key bound to the user would go with them.
    created = cli("keys", "create", "--service", "--quiet", env=env)
    assert created.returncode == 0, created.stderr
    headers = {"Authorization": f"Bearer {created.stdout.strip()}", "X-Convodb-User": "fuzzer"}
    server = start_server("--log-level", "warning", env=env)
    try:
        yield server, headers
    finally:
        stderr = server.stop()
        assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_operation_conforms_to_its_schema(
    operation: Any, live: tuple[Server, dict[str, str]]
) -> None:
    server, headers = live
    created = httpx.post(f"{server.base_url}/v1/conversations", headers=headers, timeout=10)
    conversation_id = created.json()["id"]
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    if "{conversation_id}" in operation.path:
        existing = {"conversation_id": conversation_id}
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=existing))

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=st.one_of(strategies))
    def check(case: Any) -> None:
        response = case.call_and_validate(
            base_url=server.base_url,
            headers=headers,
            excluded_checks=[positive_data_acceptance],
            timeout=10,
        )
        statuses.append(response.status_code)

    statuses: list[int] = []
    check()
    # The run reached the server (an operation without parameters has one distinct request).
    assert len(statuses) >= (EXAMPLES_PER_OPERATION // 2 if operation.path.startswith("/v1") else 1)
