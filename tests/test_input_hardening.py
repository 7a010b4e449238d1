"""Over HTTP, input that used to be stored and then break every read is refused up front.

Metadata nested 253-998 levels deep used to pass validation and commit; every response that
carried it then failed to serialise, a 500 on that conversation for good. The same for edited
cursors and positions beyond 64 bits. Each is now a 422 naming the field, and the conversation
reads as before.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests._http import Api

PROBLEM_JSON = "application/problem+json"


def nested(depth: int) -> dict[str, Any]:
    inner: Any = {}
    for _ in range(depth - 2):
        inner = {"a": inner}
    return {"a": inner}


@pytest.mark.parametrize("depth", [33, 253, 600])
async def test_deep_metadata_is_a_422_and_the_conversation_reads_on(api: Api, depth: int) -> None:
    alice = await api.auth("alice")
    created = await api.client.post("/v1/conversations", json={"title": "t"}, headers=alice)
    url = f"/v1/conversations/{created.json()['id']}"
    message = {"role": "user", "content": "hi", "metadata": nested(depth)}

    attempts = [
        await api.client.post("/v1/conversations", json={"metadata": nested(depth)}, headers=alice),
        await api.client.patch(url, json={"metadata": nested(depth)}, headers=alice),
        await api.client.post(f"{url}/messages", json={"messages": [message]}, headers=alice),
    ]

    for response in attempts:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
        problem = response.json()
        assert problem["field"] in ("metadata", "messages[0].metadata"), problem
        assert problem["limit"] == 32
    assert (await api.client.get(url, headers=alice)).status_code == 200
    assert (await api.client.get(f"{url}/messages", headers=alice)).json()["items"] == []
    listed = await api.client.get("/v1/conversations", headers=alice)
    assert [c["id"] for c in listed.json()["items"]] == [created.json()["id"]]


def forged(kind: str, **position: object) -> str:
    document = json.dumps({"v": 1, "k": kind, **position})
    return base64.urlsafe_b64encode(document.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/messages", {"after_seq": 2**70}),
        ("/messages", {"cursor": forged("messages-asc", s=2**70)}),
        ("/messages", {"cursor": forged("messages-desc", s=2**63), "order": "desc"}),
        ("", {"cursor": forged("conversations", t="2030-01-01T00:00:00", i="c1")}),
        ("", {"cursor": forged("conversations", t="2030-01-01T00:00:00Z", i="c\ud800")}),
    ],
)
async def test_edited_position_is_a_422_and_the_next_request_works(
    api: Api, path: str, params: dict[str, Any]
) -> None:
    alice = await api.auth("alice")
    created = await api.client.post("/v1/conversations", json={}, headers=alice)
    cid = created.json()["id"]
    messages = {"messages": [{"role": "user", "content": "hi"}]}
    await api.client.post(f"/v1/conversations/{cid}/messages", json=messages, headers=alice)
    url = f"/v1/conversations/{cid}{path}" if path else "/v1/conversations"

    response = await api.client.get(url, params=params, headers=alice)

    assert response.status_code == 422, response.text
    problem = response.json()
    # after_seq is bounded by the route's schema too: then the problem lists it under errors.
    named = problem.get("field") or problem["errors"][0]["location"]
    assert named in ("after_seq", "query.after_seq", "cursor")
    following = await api.client.get(f"/v1/conversations/{cid}/messages", headers=alice)
    assert [m["content"] for m in following.json()["items"]] == ["hi"]
