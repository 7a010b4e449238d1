"""``convodb serve`` as a real process on a loopback port, spoken to over TCP."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests._http import cli, free_port, start_server


def test_curl_session_against_a_real_server(database_url: str) -> None:
    """The docs' first session: create a key, a conversation, append a tool turn, read it."""
    env = {"CONVODB_DATABASE_URL": database_url}
    created = cli("keys", "create", "--user", "alice", "--quiet", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    server = start_server(env=env)
    try:
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as client:
            conversation = client.post("/v1/conversations", json={"title": "Paris"}).json()
            url = f"/v1/conversations/{conversation['id']}/messages"
            turn = [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}
                    ],
                },
                {"role": "tool", "content": "18°C", "tool_call_id": "call_1"},
            ]
            appended = client.post(url, json={"messages": turn}, headers={"Idempotency-Key": "t1"})
            assert appended.status_code == 201, appended.text
            page = client.get(url).json()
            assert [m["role"] for m in page["items"]] == ["user", "assistant", "tool"]
            assert client.get("/readyz").json() == {"status": "ready"}
            assert httpx.post(f"{server.base_url}/v1/conversations").status_code == 401
    finally:
        stderr = server.stop()
    assert "auth: API keys" in stderr


def test_dev_mode_says_so_loudly_and_refuses_a_public_interface(tmp_path: Path) -> None:
    env = {"CONVODB_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}"}
    refused = cli("serve", "--dev", "--host", "0.0.0.0", "--port", str(free_port()), env=env)
    assert refused.returncode == 1
    assert "loopback" in refused.stderr

    server = start_server("--dev", env=env)
    try:
        anonymous = httpx.post(f"{server.base_url}/v1/conversations", timeout=10)
        assert anonymous.status_code == 201
        assert anonymous.json()["user_id"] == "dev"
    finally:
        stderr = server.stop()
    assert "DEV MODE: NO AUTHENTICATION" in stderr


def test_serve_against_an_unreachable_database_fails_in_one_line() -> None:
    env = {"CONVODB_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/convodb"}  # a closed port
    result = cli("serve", "--port", str(free_port()), env=env, timeout=30)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: the database cannot be reached"), result.stderr
