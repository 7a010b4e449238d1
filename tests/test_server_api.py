"""The REST API on every database, driven in-process through httpx."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import httpx
from pydantic import BaseModel
from starlette.routing import Route

from convodb import Database
from convodb.server import create_app
from convodb.server._problems import SCHEMA_OUT_OF_DATE, STORE_BUSY, STORE_UNAVAILABLE
from convodb.server._schemas import (
    AgentInputOut,
    AppendResponse,
    ConversationOut,
    ConversationPage,
    MessageOut,
    MessagePage,
    SummaryOut,
    SummaryPage,
)
from tests._http import Api, make_client, settings

TOOL_TURN: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}],
    },
    {"role": "tool", "content": "18°C", "tool_call_id": "call_1", "tool_name": "get_weather"},
    {"role": "assistant", "content": "18°C and sunny."},
]
PROBLEM_JSON = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:convodb:problem:{name}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


async def new_conversation(api: Api, user: str = "alice", **body: Any) -> dict[str, Any]:
    response = await api.client.post("/v1/conversations", json=body, headers=await api.auth(user))
    assert response.status_code == 201, response.text
    conversation: dict[str, Any] = response.json()
    return conversation


async def test_conversation_lifecycle(api: Api) -> None:
    alice = await api.auth("alice")
    created = await api.client.post(
        "/v1/conversations", json={"title": "Paris", "metadata": {"channel": "web"}}, headers=alice
    )
    assert created.status_code == 201
    conversation = created.json()
    url = f"/v1/conversations/{conversation['id']}"
    assert created.headers["location"] == url
    assert conversation["user_id"] == "alice" and conversation["last_seq"] == 0

    assert (await api.client.get(url, headers=alice)).json() == conversation

    renamed = await api.client.patch(url, json={"title": "Paris trip"}, headers=alice)
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "Paris trip"
    assert renamed.json()["metadata"] == {"channel": "web"}  # left out: kept
    cleared = await api.client.patch(url, json={"metadata": None}, headers=alice)
    assert cleared.json()["metadata"] == {} and cleared.json()["title"] == "Paris trip"

    deleted = await api.client.delete(url, headers=alice)
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(await api.client.get(url, headers=alice), 404, "conversation-not-found")


async def test_create_without_body_makes_an_empty_conversation(api: Api) -> None:
    response = await api.client.post("/v1/conversations", headers=await api.auth("alice"))
    assert response.status_code == 201
    assert response.json()["title"] is None and response.json()["metadata"] == {}


async def test_list_conversations_pages_newest_activity_first(api: Api) -> None:
    alice = await api.auth("alice")
    ids = [(await new_conversation(api, title=f"c{i}"))["id"] for i in range(5)]
    await api.client.post(
        f"/v1/conversations/{ids[0]}/messages",
        json={"messages": [{"role": "user", "content": "bump"}]},
        headers=alice,
    )
    await new_conversation(api, "bob")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.client.get("/v1/conversations", params=params, headers=alice)).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[0], ids[4], ids[3], ids[2], ids[1]]


async def test_append_a_tool_turn_and_read_it_both_ways(api: Api) -> None:
    alice = await api.auth("alice")
    cid = (await new_conversation(api))["id"]
    url = f"/v1/conversations/{cid}/messages"
    appended = await api.client.post(url, json={"messages": TOOL_TURN}, headers=alice)
    assert appended.status_code == 201, appended.text
    stored = appended.json()["messages"]
    assert [m["seq"] for m in stored] == [1, 2, 3, 4]
    assert stored[1]["tool_calls"] == TOOL_TURN[1]["tool_calls"]
    assert stored[2]["tool_call_id"] == "call_1" and stored[2]["tool_name"] == "get_weather"

    forward = (await api.client.get(url, params={"limit": 3}, headers=alice)).json()
    assert [m["seq"] for m in forward["items"]] == [1, 2, 3]
    rest = await api.client.get(
        url, params={"limit": 3, "cursor": forward["next_cursor"]}, headers=alice
    )
    assert [m["seq"] for m in rest.json()["items"]] == [4]
    assert rest.json()["next_cursor"] is None

    backward = await api.client.get(url, params={"order": "desc", "limit": 3}, headers=alice)
    assert [m["seq"] for m in backward.json()["items"]] == [4, 3, 2]
    older = await api.client.get(
        url,
        params={"order": "desc", "limit": 3, "cursor": backward.json()["next_cursor"]},
        headers=alice,
    )
    assert [m["seq"] for m in older.json()["items"]] == [1]

    following = await api.client.get(url, params={"after_seq": 2}, headers=alice)
    assert [m["seq"] for m in following.json()["items"]] == [3, 4]
    conversation = (await api.client.get(f"/v1/conversations/{cid}", headers=alice)).json()
    assert conversation["last_seq"] == 4


async def test_get_one_message_by_its_seq_as_an_item_of_the_list(api: Api) -> None:
    alice, bob = await api.auth("alice"), await api.auth("bob")
    cid = (await new_conversation(api))["id"]
    url = f"/v1/conversations/{cid}/messages"
    await api.client.post(url, json={"messages": TOOL_TURN}, headers=alice)
    listed = (await api.client.get(url, headers=alice)).json()["items"]

    for item in listed:
        response = await api.client.get(f"{url}/{item['seq']}", headers=alice)
        assert response.status_code == 200, response.text
        assert response.json() == item

    beyond = assert_problem(
        await api.client.get(f"{url}/5", headers=alice), 404, "message-not-found"
    )
    assert "seq 5" in beyond["detail"] and beyond["instance"] == f"{url}/5"
    for bad in ("0", "-1", str(2**62 + 1), "1.5", "one"):
        invalid = assert_problem(
            await api.client.get(f"{url}/{bad}", headers=alice), 422, "invalid-request"
        )
        assert [e["location"] for e in invalid["errors"]] == ["path.seq"], bad

    # Another user's key: the same 404 as a missing conversation, whether the seq exists or not.
    missing_url = "/v1/conversations/no-such-conversation/messages"
    for seq in (1, 5):
        foreign = await api.client.get(f"{url}/{seq}", headers=bob)
        missing = await api.client.get(f"{missing_url}/{seq}", headers=bob)
        assert_problem(foreign, 404, "conversation-not-found")
        assert foreign.json()["detail"].replace(cid, "<id>") == missing.json()["detail"].replace(
            "no-such-conversation", "<id>"
        )

    document = (await api.client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/conversations/{conversation_id}/messages/{seq}"]["get"]
    examples = operation["responses"]["404"]["content"][PROBLEM_JSON]["examples"]
    assert set(examples) == {"conversation-not-found", "message-not-found"}


async def test_list_summaries_pages_newest_first(api: Api) -> None:
    alice, bob = await api.auth("alice"), await api.auth("bob")
    cid = (await new_conversation(api))["id"]
    eight = [{"role": "user", "content": f"m{i}"} for i in range(8)]
    await api.client.post(
        f"/v1/conversations/{cid}/messages", json={"messages": eight}, headers=alice
    )
    url = f"/v1/conversations/{cid}/summaries"
    assert (await api.client.get(url, headers=alice)).json() == {"items": [], "next_cursor": None}
    saved = []
    for upto in (2, 4, 6, 8):
        body = {"content": f"up to {upto}", "upto_seq": upto, "metadata": {"n": upto}}
        saved.append((await api.client.post(url, json=body, headers=alice)).json())

    first = await api.client.get(url, params={"limit": 3}, headers=alice)
    assert first.status_code == 200, first.text
    assert first.json()["items"] == saved[::-1][:3]
    rest = await api.client.get(
        url, params={"limit": 3, "cursor": first.json()["next_cursor"]}, headers=alice
    )
    assert rest.json() == {"items": saved[:1], "next_cursor": None}
    whole = (await api.client.get(url, headers=alice)).json()
    assert [s["upto_seq"] for s in whole["items"]] == [8, 6, 4, 2]

    bad_cursor = await api.client.get(url, params={"cursor": "garbage"}, headers=alice)
    assert assert_problem(bad_cursor, 422, "invalid-input")["field"] == "cursor"
    messages_cursor = (
        await api.client.get(
            f"/v1/conversations/{cid}/messages", params={"limit": 1}, headers=alice
        )
    ).json()["next_cursor"]
    other_list = await api.client.get(url, params={"cursor": messages_cursor}, headers=alice)
    assert assert_problem(other_list, 422, "invalid-input")["field"] == "cursor"
    for limit in (0, 100_000):
        too = await api.client.get(url, params={"limit": limit}, headers=alice)
        assert [e["location"] for e in assert_problem(too, 422, "invalid-request")["errors"]] == [
            "query.limit"
        ]
    foreign = await api.client.get(url, headers=bob)
    assert_problem(foreign, 404, "conversation-not-found")
    with_cursor = await api.client.get(
        url, params={"cursor": first.json()["next_cursor"]}, headers=bob
    )
    assert_problem(with_cursor, 404, "conversation-not-found")


async def test_delete_me_erases_everything_of_the_caller_and_nobody_else(api: Api) -> None:
    alice, bob = await api.auth("alice"), await api.auth("bob")
    mine = (await new_conversation(api, "alice"))["id"]
    theirs = (await new_conversation(api, "bob"))["id"]
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    for cid, headers in ((mine, alice), (theirs, bob)):
        appended = await api.client.post(
            f"/v1/conversations/{cid}/messages", json={"messages": messages}, headers=headers
        )
        assert appended.status_code == 201, appended.text

    erased = await api.client.delete("/v1/me", headers=alice)
    assert erased.status_code == 200, erased.text
    assert erased.json() == {
        "user_id": "alice",
        "conversations": 1,
        "messages": 2,
        "summaries": 0,
        "attachments": 0,
        "idempotency_keys": 0,
        "api_keys": 1,
    }
    # Alice's key went with her; Bob's conversation is untouched.
    assert (await api.client.get(f"/v1/conversations/{mine}", headers=alice)).status_code == 401
    again = await api.client.get(f"/v1/conversations/{theirs}/messages", headers=bob)
    assert [m["content"] for m in again.json()["items"]] == ["hi", "hello"]
    assert (await api.client.delete("/v1/me")).status_code == 401


async def test_invalid_message_stores_nothing_and_names_the_field(api: Api) -> None:
    alice = await api.auth("alice")
    cid = (await new_conversation(api))["id"]
    url = f"/v1/conversations/{cid}/messages"
    batch = [*TOOL_TURN[:2], {"role": "tool", "content": "18°C"}]  # no tool_call_id
    body = assert_problem(
        await api.client.post(url, json={"messages": batch}, headers=alice), 422, "invalid-input"
    )
    assert body["field"] == "messages[2].tool_call_id"
    nul = [{"role": "user", "content": "a\x00b"}]
    body = assert_problem(
        await api.client.post(url, json={"messages": nul}, headers=alice), 422, "invalid-input"
    )
    assert body["field"] == "messages[0].content"
    assert (await api.client.get(url, headers=alice)).json()["items"] == []


async def test_idempotency_key_retry_returns_the_original_response_and_stores_nothing(
    api: Api,
) -> None:
    alice = await api.auth("alice")
    cid = (await new_conversation(api))["id"]
    url = f"/v1/conversations/{cid}/messages"
    headers = {**alice, "Idempotency-Key": "turn-1"}
    first = await api.client.post(url, json={"messages": TOOL_TURN}, headers=headers)
    retry = await api.client.post(url, json={"messages": TOOL_TURN}, headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert [m["key"] for m in first.json()["messages"]] == [f"idem:turn-1:{i}" for i in range(4)]
    page = (await api.client.get(url, headers=alice)).json()
    assert len(page["items"]) == 4

    changed = [*TOOL_TURN[:3], {"role": "assistant", "content": "Rainy."}]
    longer = [*TOOL_TURN, {"role": "user", "content": "and tomorrow?"}]
    for body in (changed, longer, TOOL_TURN[:2]):
        assert_problem(
            await api.client.post(url, json={"messages": body}, headers=headers),
            409,
            "idempotency-key-reuse",
        )
    assert len((await api.client.get(url, headers=alice)).json()["items"]) == 4

    other_key = {**alice, "Idempotency-Key": "turn-2"}
    again = await api.client.post(url, json={"messages": TOOL_TURN[:1]}, headers=other_key)
    assert again.json()["messages"][0]["seq"] == 5


async def test_idempotency_key_must_be_printable_ascii(api: Api) -> None:
    cid = (await new_conversation(api))["id"]
    headers = {**await api.auth("alice"), "Idempotency-Key": "x" * 201}
    response = await api.client.post(
        f"/v1/conversations/{cid}/messages", json={"messages": TOOL_TURN}, headers=headers
    )
    body = assert_problem(response, 422, "invalid-request")
    assert "Idempotency-Key" in body["detail"]


async def test_malformed_json_says_what_is_wrong_and_where(api: Api) -> None:
    alice = await api.auth("alice")
    cid = (await new_conversation(api))["id"]
    url = f"/v1/conversations/{cid}/messages"
    text = '{\n  "messages": [\n    {"role": "user" "content": "hi"}\n  ]\n}'
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        expected = f"{error.msg} at line {error.lineno}, column {error.colno}"
    assert expected == "Expecting ',' delimiter at line 3, column 21"
    malformed = await api.client.post(
        url, content=text.encode(), headers={**alice, "content-type": "application/json"}
    )
    body = assert_problem(malformed, 400, "bad-request")
    assert body["detail"] == f"the body is not valid JSON: {expected}"
    assert body["errors"] == [{"location": "body", "message": expected}]


async def test_malformed_json_is_400_and_schema_mismatch_is_422(api: Api) -> None:
    alice = await api.auth("alice")
    cid = (await new_conversation(api))["id"]
    url = f"/v1/conversations/{cid}/messages"
    malformed = await api.client.post(
        url, content=b'{"messages": [', headers={**alice, "content-type": "application/json"}
    )
    assert_problem(malformed, 400, "bad-request")
    mismatch = await api.client.post(url, json={"messages": [{"role": "robot"}]}, headers=alice)
    body = assert_problem(mismatch, 422, "invalid-request")
    assert body["errors"][0]["location"].startswith("body.messages.0.role")
    extra = await api.client.post(url, json={"messages": [], "user_id": "bob"}, headers=alice)
    assert_problem(extra, 422, "invalid-request")
    too_many = await api.client.get(url, params={"limit": 100_000}, headers=alice)
    assert_problem(too_many, 422, "invalid-request")
    bad_cursor = await api.client.get(url, params={"cursor": "garbage"}, headers=alice)
    assert assert_problem(bad_cursor, 422, "invalid-input")["field"] == "cursor"


async def test_unknown_route_and_wrong_method_are_problems(api: Api) -> None:
    alice = await api.auth("alice")
    assert_problem(await api.client.get("/v1/nothing", headers=alice), 404, "not-found")
    wrong = await api.client.put("/v1/conversations", headers=alice)
    assert_problem(wrong, 405, "method-not-allowed")
    assert wrong.headers["allow"]


async def test_an_empty_append_is_422_naming_messages_and_stores_nothing(api: Api) -> None:
    alice = await api.auth("alice")
    cid = (await new_conversation(api))["id"]
    url = f"/v1/conversations/{cid}/messages"
    for headers in (alice, {**alice, "Idempotency-Key": "empty"}):
        response = await api.client.post(url, json={"messages": []}, headers=headers)
        body = assert_problem(response, 422, "invalid-request")
        assert [e["location"] for e in body["errors"]] == ["body.messages"]
        assert body["detail"].startswith("body.messages: ")
    conversation = (await api.client.get(f"/v1/conversations/{cid}", headers=alice)).json()
    assert conversation["last_seq"] == 0


async def test_a_trailing_slash_is_a_404_problem_naming_the_path_on_every_route(api: Api) -> None:
    alice = await api.auth("alice")
    cid = (await new_conversation(api))["id"]
    checked = 0
    for route in api.app.routes:
        if not isinstance(route, Route):  # the docs' asset mount serves files, not routes
            continue
        path = route.path.replace("{conversation_id}", cid)
        for method in sorted(route.methods or ()):
            response = await api.client.request(method, f"{path}/", headers=alice)
            if method == "HEAD":
                assert response.status_code == 404
                continue
            body = assert_problem(response, 404, "not-found")
            assert body["detail"] == (
                f"no route {path + '/'!r}: paths take no trailing slash; use {path!r}"
            )
            checked += 1
    assert checked >= 14  # every /v1 operation, health, docs and the OpenAPI document
    unknown = await api.client.get("/v1/nothing/", headers=alice)
    assert "trailing slash" not in assert_problem(unknown, 404, "not-found")["detail"]


async def test_docs_pages_load_their_assets_from_this_server(api: Api) -> None:
    """/docs and /redoc work offline: every URL they reference is local and served."""
    assets: set[str] = set()
    for page in ("/docs", "/redoc"):
        response = await api.client.get(page)
        assert response.status_code == 200
        html = response.text
        assert not re.search(r"https?:", html), html  # no CDN, no fonts, no validator
        urls = re.findall(r'(?:src|href|spec-url)="([^"]*)"', html)
        assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        assets.update(u for u in urls if u != "/openapi.json")
    assert '"validatorUrl": null' in (await api.client.get("/docs")).text
    assert len(assets) >= 4  # Swagger UI's script and style, ReDoc's script, the icon
    for url in sorted(assets):
        asset = await api.client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    assert (await api.client.get("/openapi.json")).status_code == 200


async def test_body_over_the_limit_is_413_with_or_without_content_length(db: Database) -> None:
    app = create_app(settings(max_body_bytes=4096), database=db)
    async with make_client(app) as client:
        api = Api(db, app, client)
        alice = await api.auth("alice")
        cid = (await new_conversation(api))["id"]
        url = f"/v1/conversations/{cid}/messages"
        big = {"messages": [{"role": "user", "content": "x" * 5000}]}
        body = assert_problem(
            await client.post(url, json=big, headers=alice), 413, "body-too-large"
        )
        assert body["limit"] == 4096

        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 1000

        chunked = await client.post(
            url, content=chunks(), headers={**alice, "content-type": "application/json"}
        )
        assert_problem(chunked, 413, "body-too-large")
        assert (await client.get(url, headers=alice)).json()["items"] == []


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).json() == {"status": "ready"}


async def test_readiness_is_503_when_the_database_cannot_be_used(tmp_path: Any) -> None:
    broken = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    app = create_app(settings(), database=broken)
    try:
        async with make_client(app) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert_problem(await client.get("/readyz"), 503, "store-unavailable")
    finally:
        await broken.dispose()


async def test_openapi_documents_every_operation_with_problems_and_examples(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    operations = [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]
    assert len(operations) >= 9
    for path, method, op in operations:
        assert op.get("summary") and op.get("description"), (path, method)
        for status, response in op["responses"].items():
            if int(status) >= 400:
                media = response["content"]["application/problem+json"]
                assert media["schema"] == {"$ref": "#/components/schemas/Problem"}
                assert media["examples"], (path, method, status)
        if path.startswith("/v1/"):
            assert {"bearer": []} in op["security"]
            assert "401" in op["responses"] and "422" in op["responses"]
    schemas = document["components"]["schemas"]
    for name in ("AppendRequest", "MessageOut", "ConversationOut", "Problem"):
        assert schemas[name].get("examples"), name


async def test_every_503_documents_each_database_fault(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    faults = {
        kind.name: kind.detail for kind in (STORE_BUSY, STORE_UNAVAILABLE, SCHEMA_OUT_OF_DATE)
    }
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.startswith("/v1/") or path == "/readyz":
                examples = operation["responses"]["503"]["content"][PROBLEM_JSON]["examples"]
                details = {name: e["value"]["detail"] for name, e in examples.items()}
                assert details == faults, (method, path)


async def test_agent_input_in_each_format_keeps_tool_calls_with_their_results(api: Api) -> None:
    alice = await api.auth("alice")
    cid = (await new_conversation(api))["id"]
    await api.client.post(
        f"/v1/conversations/{cid}/messages", json={"messages": TOOL_TURN}, headers=alice
    )
    url = f"/v1/conversations/{cid}/agent-input"
    request = {"system_prompt": "Be brief.", "user_message": "And tomorrow?"}
    chat = (await api.client.post(url, json=request, headers=alice)).json()
    assert chat["format"] == "openai-chat" and list(chat["request"]) == ["messages"]
    assert chat["request"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat["request"]["messages"][-1] == {"role": "user", "content": "And tomorrow?"}
    assert chat["first_seq"] == 1 and chat["dropped"] == 0 and chat["token_count"] > 0

    anthropic = await api.client.post(url, json={**request, "format": "anthropic"}, headers=alice)
    assert anthropic.json()["request"]["system"] == "Be brief."
    turns = anthropic.json()["request"]["messages"]
    assert all(m["role"] in ("user", "assistant") for m in turns)
    responses = await api.client.post(
        url, json={**request, "format": "openai-responses"}, headers=alice
    )
    assert list(responses.json()["request"]) == ["input"]

    # Two messages fit: the tool result cannot come without its call, so both drop.
    small = await api.client.post(url, json={"max_messages": 2}, headers=alice)
    assert [m["role"] for m in small.json()["request"]["messages"]] == ["assistant"]
    assert small.json()["first_seq"] == 4 and small.json()["dropped"] == 3

    over = await api.client.post(url, json={**request, "max_tokens": 1}, headers=alice)
    assert assert_problem(over, 422, "context-budget-exceeded")["field"] == "max_tokens"
    unknown = await api.client.post(url, json={"format": "cobol"}, headers=alice)
    assert_problem(unknown, 422, "invalid-request")


async def test_summary_starts_later_agent_input_and_must_cover_more_each_time(api: Api) -> None:
    alice = await api.auth("alice")
    cid = (await new_conversation(api))["id"]
    await api.client.post(
        f"/v1/conversations/{cid}/messages", json={"messages": TOOL_TURN}, headers=alice
    )
    url = f"/v1/conversations/{cid}/summaries"
    saved = await api.client.post(
        url, json={"content": "Paris weather asked and answered.", "upto_seq": 3}, headers=alice
    )
    assert saved.status_code == 201, saved.text
    assert saved.json()["upto_seq"] == 3
    window = await api.client.post(f"/v1/conversations/{cid}/agent-input", headers=alice)
    contents = [m["content"] for m in window.json()["request"]["messages"]]
    assert contents == ["Paris weather asked and answered.", "18°C and sunny."]

    again = await api.client.post(url, json={"content": "older", "upto_seq": 2}, headers=alice)
    assert_problem(again, 409, "conflict")
    beyond = await api.client.post(url, json={"content": "x", "upto_seq": 99}, headers=alice)
    assert assert_problem(beyond, 422, "invalid-input")["field"] == "upto_seq"


async def test_every_response_is_exactly_its_documented_model_as_json(api: Api) -> None:
    """Routes encode their dicts directly; each body must be what the model would send."""
    alice = await api.auth("alice")
    created = await api.client.post(
        "/v1/conversations", json={"title": "Paris", "metadata": {"a": [1, "é"]}}, headers=alice
    )
    cid = created.json()["id"]
    url = f"/v1/conversations/{cid}"
    parts = [
        {"type": "text", "text": "And this one?"},
        {"type": "image", "url": "https://example.com/paris.jpg", "detail": "low"},
        {"type": "file", "data": "aGVsbG8=", "media_type": "text/plain", "filename": "a.txt"},
    ]
    messages = {
        "messages": [
            *TOOL_TURN,
            {"role": "user", "content": "ok", "metadata": {"x": 1}},
            {"role": "user", "content": parts},
        ]
    }
    summary = {"content": "Paris weather.", "upto_seq": 3}
    agent_input = {"system_prompt": "Be brief.", "user_message": "And tomorrow?"}
    responses: list[tuple[httpx.Response, type[BaseModel], int]] = [
        (created, ConversationOut, 201),
        (
            await api.client.post(f"{url}/messages", json=messages, headers=alice),
            AppendResponse,
            201,
        ),
        (await api.client.get("/v1/conversations", headers=alice), ConversationPage, 200),
        (await api.client.get(url, headers=alice), ConversationOut, 200),
        (await api.client.patch(url, json={"title": "P"}, headers=alice), ConversationOut, 200),
        (await api.client.get(f"{url}/messages", headers=alice), MessagePage, 200),
        (await api.client.post(f"{url}/summaries", json=summary, headers=alice), SummaryOut, 201),
        (await api.client.get(f"{url}/messages/6", headers=alice), MessageOut, 200),
        (await api.client.get(f"{url}/summaries", headers=alice), SummaryPage, 200),
    ]
    for format in ("openai-chat", "openai-responses", "anthropic", "plain"):
        response = await api.client.post(
            f"{url}/agent-input", json={**agent_input, "format": format}, headers=alice
        )
        responses.append((response, AgentInputOut, 200))
    for response, model, status in responses:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert model.model_validate_json(response.content).model_dump_json().encode() == (
            response.content
        ), model.__name__
    stored = responses[1][0].json()["messages"]
    assert stored[0]["created_at"].endswith("Z")
    assert stored[-1]["content"][2] == {  # no nulls: fields without a value are left out
        "type": "file",
        "media_type": "text/plain",
        "filename": "a.txt",
        "attachment": hashlib.sha256(b"hello").hexdigest(),
        "size": 5,
    }


async def test_remove_messages_returns_them_and_leaves_a_gap(api: Api) -> None:
    alice, bob = await api.auth("alice"), await api.auth("bob")
    cid = (await new_conversation(api))["id"]
    url = f"/v1/conversations/{cid}/messages"
    await api.client.post(url, json={"messages": TOOL_TURN}, headers=alice)
    listed = (await api.client.get(url, headers=alice)).json()["items"]

    # Another user: the same 404 as a missing conversation, and nothing removed
    foreign = await api.client.delete(url, params={"newest": 1}, headers=bob)
    assert_problem(foreign, 404, "conversation-not-found")
    # Not exactly one selector, or one out of range: 422 naming it, nothing removed
    for params, name, field in (
        ({}, "invalid-input", "newest"),
        ({"newest": 1, "oldest": 1}, "invalid-input", "newest"),
        ({"newest": 0}, "limit-exceeded", "newest"),
        ({"seqs": [1, 0]}, "limit-exceeded", "seqs[1]"),
    ):
        bad = assert_problem(await api.client.delete(url, params=params, headers=alice), 422, name)
        assert bad["field"] == field, params

    # The newest: the final answer, returned exactly as it was listed
    response = await api.client.delete(url, params={"newest": 1}, headers=alice)
    assert response.status_code == 200, response.text
    assert AppendResponse.model_validate(response.json()).messages  # the schema's shape
    assert response.json() == {"messages": [listed[3]]}
    # Chosen seqs: the call and its result go together; 9 was never there
    response = await api.client.delete(url, params={"seqs": [2, 3, 9]}, headers=alice)
    assert [m["seq"] for m in response.json()["messages"]] == [2, 3]

    # An edited turn is appended after the gap: seqs are never reused
    appended = await api.client.post(
        url, json={"messages": [{"role": "assistant", "content": "edited"}]}, headers=alice
    )
    assert appended.json()["messages"][0]["seq"] == 5
    remaining = (await api.client.get(url, headers=alice)).json()["items"]
    assert [(m["seq"], m["content"]) for m in remaining] == [
        (1, "Weather in Paris?"),
        (5, "edited"),
    ]
    conversation = (await api.client.get(f"/v1/conversations/{cid}", headers=alice)).json()
    assert (conversation["last_seq"], conversation["message_count"]) == (5, 2)
    assert_problem(await api.client.get(f"{url}/4", headers=alice), 404, "message-not-found")
