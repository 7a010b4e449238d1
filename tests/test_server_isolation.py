"""Isolation: for every endpoint and method, another user's conversation is a missing one.

User B, with valid credentials, gets exactly the response a missing conversation gives
(status, headers that matter, body up to the id itself), and nothing of A's changes.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import pytest

from tests._http import Api

# A's first message carries an image: its attachment is what B asks for by digest.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
DIGEST = hashlib.sha256(base64.b64decode(PNG)).hexdigest()
A_TURN = {
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {"type": "image", "data": PNG, "media_type": "image/png"},
            ],
        }
    ]
}

# (method, path template, request options): every operation on one conversation.
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/v1/conversations/{cid}", {}),
    ("PATCH", "/v1/conversations/{cid}", {"json": {"title": "mine now"}}),
    ("PATCH", "/v1/conversations/{cid}", {"json": {"metadata": {"owner": "b"}}}),
    ("DELETE", "/v1/conversations/{cid}", {}),
    ("GET", "/v1/conversations/{cid}/messages", {}),
    ("GET", "/v1/conversations/{cid}/messages", {"params": {"order": "desc", "limit": 1}}),
    ("GET", "/v1/conversations/{cid}/messages", {"params": {"after_seq": 0}}),
    ("GET", "/v1/conversations/{cid}/messages/{seq}", {}),  # A's message 1
    ("DELETE", "/v1/conversations/{cid}/messages", {"params": {"newest": 1}}),
    ("DELETE", "/v1/conversations/{cid}/messages", {"params": {"seqs": [1]}}),
    (
        "POST",
        "/v1/conversations/{cid}/messages",
        {"json": {"messages": [{"role": "user", "content": "hi from b"}]}},
    ),
    (
        "POST",
        "/v1/conversations/{cid}/messages",
        {
            "json": {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            }
        },
    ),
    ("POST", "/v1/conversations/{cid}/agent-input", {}),
    (
        "POST",
        "/v1/conversations/{cid}/agent-input",
        {"json": {"format": "anthropic", "max_tokens": 100, "user_message": "hi"}},
    ),
    ("POST", "/v1/conversations/{cid}/summaries", {"json": {"content": "b's", "upto_seq": 1}}),
    ("GET", "/v1/conversations/{cid}/summaries", {}),
    ("GET", "/v1/conversations/{cid}/summaries", {"params": {"limit": 1}}),
    ("GET", "/v1/conversations/{cid}/attachments/{sha256}", {}),
    (
        "GET",
        "/v1/conversations/{cid}/attachments/{sha256}",
        {"headers": {"If-None-Match": f'"{DIGEST}"'}},
    ),
    (
        "POST",
        "/v1/conversations/{cid}/messages",
        {
            "json": A_TURN,
            "headers": {"Idempotency-Key": "a-turn"},  # the key and the turn A used
        },
    ),
]


def _label(request: tuple[str, str, dict[str, Any]]) -> str:
    method, path, options = request
    return f"{method} {path} {sorted(options)}"


async def _snapshot(api: Api, cid: str) -> tuple[Any, ...]:
    """Everything A can see: the conversation, its messages, its agent input, its attachment
    and A's list."""
    alice = await api.auth("alice")
    conversation = (await api.client.get(f"/v1/conversations/{cid}", headers=alice)).json()
    messages = (await api.client.get(f"/v1/conversations/{cid}/messages", headers=alice)).json()
    listed = (await api.client.get("/v1/conversations", headers=alice)).json()
    window = (await api.client.post(f"/v1/conversations/{cid}/agent-input", headers=alice)).json()
    attachment = await api.client.get(
        f"/v1/conversations/{cid}/attachments/{DIGEST}", headers=alice
    )
    return conversation, messages, listed, window, attachment.status_code, attachment.content


def _comparable(response: Any, cid: str) -> tuple[int, str | None, Any]:
    body = response.text.replace(cid, "<id>")
    return response.status_code, response.headers.get("content-type"), body


def test_the_matrix_covers_every_operation_on_a_conversation(api: Api) -> None:
    document = api.app.openapi()
    operations = {
        (method.upper(), path.replace("{conversation_id}", "{cid}"))
        for path, item in document["paths"].items()
        if "{conversation_id}" in path
        for method in item
    }
    assert operations == {(method, path) for method, path, _ in REQUESTS}


@pytest.mark.parametrize("request_", REQUESTS, ids=_label)
async def test_foreign_conversation_answers_like_a_missing_one_and_stays_unchanged(
    api: Api, request_: tuple[str, str, dict[str, Any]]
) -> None:
    method, path, options = request_
    alice, bob = await api.auth("alice"), await api.auth("bob")
    cid = (await api.client.post("/v1/conversations", headers=alice, json={"title": "a"})).json()[
        "id"
    ]
    appended = await api.client.post(
        f"/v1/conversations/{cid}/messages",
        json=A_TURN,
        headers={**alice, "Idempotency-Key": "a-turn"},
    )
    assert appended.status_code == 201
    before = await _snapshot(api, cid)

    headers = {**options.get("headers", {}), **bob}
    kwargs = {k: v for k, v in options.items() if k != "headers"}
    missing_id = str(uuid.uuid4())
    foreign = await api.client.request(
        method, path.format(cid=cid, sha256=DIGEST, seq=1), headers=headers, **kwargs
    )
    missing = await api.client.request(
        method, path.format(cid=missing_id, sha256=DIGEST, seq=1), headers=headers, **kwargs
    )

    assert foreign.status_code == 404
    assert foreign.json()["type"] == "urn:convodb:problem:conversation-not-found"
    assert _comparable(foreign, cid) == _comparable(missing, missing_id)
    assert await _snapshot(api, cid) == before
    bobs = (await api.client.get("/v1/conversations", headers=bob)).json()
    assert bobs == {"items": [], "next_cursor": None}
