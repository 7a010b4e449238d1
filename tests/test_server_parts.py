"""Content parts over HTTP, on every database: a Claude tool loop with thinking and a
screenshot appended, read back without its bytes, the bytes served by digest (cached, isolated,
never run as a page), and agent input that the provider SDKs take and send as it is.
"""

from __future__ import annotations

import base64
import importlib
import json
import random
import struct
import zlib
from typing import Any

import httpx
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from convodb import Database
from convodb._message_input import _INPUT_FIELDS
from convodb._parts import PART_TYPES
from convodb.server import create_app
from convodb.server._part_schemas import PART_MODELS
from tests._http import Api, make_client, settings

from .test_formats import check_anthropic, check_openai_chat, check_openai_responses
from .test_formats_parts import SIGNATURE, THINKING
from .test_parts_store import digest, png
from .test_server_api import assert_problem, new_conversation

SCREENSHOT = png(64, 48)
REPORT = base64.b64encode(  # a two-page PDF (its page tree, without content streams)
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R 4 0 R]/Count 2>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
    b"4 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
).decode()
TOOL_LOOP: list[dict[str, Any]] = [
    {"role": "user", "content": "Is it raining in Paris? The forecast site shows it."},
    {
        "role": "assistant",
        "content": [THINKING, {"type": "text", "text": "Let me look at the forecast."}],
        "tool_calls": [
            {
                "id": "toolu_01A",
                "name": "screenshot",
                "arguments": '{"url": "https://weather.example/paris"}',
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "toolu_01A",
        "tool_name": "screenshot",
        "content": [
            {"type": "text", "text": "Screenshot of weather.example/paris"},
            {"type": "image", "data": SCREENSHOT, "media_type": "image/png"},
        ],
    },
]
IMAGE_BY_URL = [
    {"type": "text", "text": "And this photo?"},
    {"type": "image", "url": "https://example.com/paris.jpg", "detail": "low"},
]


def noisy_png(width: int, height: int) -> str:
    """A real grey PNG of random pixels (stored, not compressed), base64: a screenshot's size."""
    noise = random.Random(0)
    rows = b"".join(b"\x00" + noise.randbytes(width) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(rows, 0)), (b"IEND", b"")]
    data = b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in chunks
    )
    return base64.b64encode(data).decode()


async def appended(api: Api, messages: list[dict[str, Any]], user: str = "alice") -> str:
    cid: str = (await new_conversation(api, user))["id"]
    response = await api.client.post(
        f"/v1/conversations/{cid}/messages",
        json={"messages": messages},
        headers=await api.auth(user),
    )
    assert response.status_code == 201, response.text
    return cid


async def agent_input(api: Api, cid: str, **body: Any) -> dict[str, Any]:
    response = await api.client.post(
        f"/v1/conversations/{cid}/agent-input", json=body, headers=await api.auth("alice")
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert list(result) == ["format", "request", "token_count", "dropped", "first_seq"]
    return result


def sdk_http_client(sent: list[dict[str, Any]], reply: dict[str, Any]) -> Any:
    """An HTTP client for the provider SDKs that records each request body, answers ``reply``
    and sends nothing anywhere. Recent SDK releases run on ``httpx2``, older ones on httpx."""
    try:
        http: Any = importlib.import_module("httpx2")
    except ModuleNotFoundError:
        http = httpx

    def handle(request: Any) -> Any:
        sent.append(json.loads(request.content))
        return http.Response(200, json=reply)

    return http.AsyncClient(transport=http.MockTransport(handle))


async def test_a_thinking_tool_turn_with_a_screenshot_reads_back_with_its_digest_not_its_data(
    api: Api,
) -> None:
    alice = await api.auth("alice")
    cid = (await new_conversation(api))["id"]
    url = f"/v1/conversations/{cid}/messages"
    response = await api.client.post(url, json={"messages": TOOL_LOOP}, headers=alice)
    assert response.status_code == 201, response.text

    screenshot = {
        "type": "image",
        "media_type": "image/png",
        "attachment": digest(SCREENSHOT),
        "size": len(base64.b64decode(SCREENSHOT)),
        "width": 64,
        "height": 48,
    }
    for stored in (response.json()["messages"], (await api.client.get(url, headers=alice)).json()):
        messages = stored if isinstance(stored, list) else stored["items"]
        assert [m["seq"] for m in messages] == [1, 2, 3]
        assert messages[1]["content"] == TOOL_LOOP[1]["content"]  # thinking kept verbatim
        assert messages[1]["tool_calls"] == TOOL_LOOP[1]["tool_calls"]
        assert messages[2]["content"] == [TOOL_LOOP[2]["content"][0], screenshot]


async def test_an_attachment_is_served_by_digest_with_cache_headers_and_304(api: Api) -> None:
    cid = await appended(api, TOOL_LOOP)
    alice = await api.auth("alice")
    url = f"/v1/conversations/{cid}/attachments/{digest(SCREENSHOT)}"

    response = await api.client.get(url, headers=alice)
    assert response.status_code == 200, response.text
    assert response.content == base64.b64decode(SCREENSHOT)
    etag = f'"{digest(SCREENSHOT)}"'
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["etag"] == etag
    assert response.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-disposition" not in response.headers  # an image may show inline

    for held in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = await api.client.get(url, headers={**alice, "If-None-Match": held})
        assert cached.status_code == 304, held
        assert cached.content == b""
        assert cached.headers["etag"] == etag
        assert cached.headers["cache-control"] == response.headers["cache-control"]
    stale = await api.client.get(url, headers={**alice, "If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == response.content

    # The bytes sent back as data are the same attachment: content-addressed, stored once.
    again = [
        {
            "role": "user",
            "content": [{"type": "image", "data": SCREENSHOT, "media_type": "image/png"}],
        }
    ]
    resent = await api.client.post(
        f"/v1/conversations/{cid}/messages", json={"messages": again}, headers=alice
    )
    assert resent.json()["messages"][0]["content"][0]["attachment"] == digest(SCREENSHOT)


async def test_documents_are_downloads_never_pages_of_the_api(api: Api) -> None:
    page = "<html><script>alert(document.cookie)</script></html>"
    files = [
        {"type": "file", "data": REPORT, "media_type": "application/pdf", "filename": "r.pdf"},
        {
            "type": "file",
            "data": base64.b64encode(page.encode()).decode(),
            "media_type": "text/html",
        },
    ]
    cid = await appended(api, [{"role": "user", "content": files}])
    alice = await api.auth("alice")
    stored = (await api.client.get(f"/v1/conversations/{cid}/messages", headers=alice)).json()
    pdf, html = stored["items"][0]["content"]
    assert pdf["pages"] == 2 and pdf["filename"] == "r.pdf" and "data" not in pdf
    for part, media_type in ((pdf, "application/pdf"), (html, "text/html; charset=utf-8")):
        url = f"/v1/conversations/{cid}/attachments/{part['attachment']}"
        response = await api.client.get(url, headers=alice)
        assert response.status_code == 200
        assert response.headers["content-type"] == media_type
        assert response.headers["content-disposition"] == "attachment"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert response.text == page


async def test_another_users_attachment_or_an_unknown_digest_looks_like_a_missing_conversation(
    api: Api,
) -> None:
    cid = await appended(api, TOOL_LOOP)
    other = await appended(api, [{"role": "user", "content": "hi"}])  # alice's, without it
    bob = await api.auth("bob")
    path = "/v1/conversations/{}/attachments/{}"
    missing = await api.client.get(path.format("c-missing", digest(SCREENSHOT)), headers=bob)
    body = assert_problem(missing, 404, "conversation-not-found")
    assert body["detail"] == "Conversation not found: 'c-missing'"

    cases = [
        (cid, digest(SCREENSHOT), bob),
        (cid, digest(SCREENSHOT), {**bob, "If-None-Match": f'"{digest(SCREENSHOT)}"'}),
        (other, digest(SCREENSHOT), await api.auth("alice")),
        (cid, "0" * 64, await api.auth("alice")),
    ]
    for conversation, sha256, headers in cases:
        response = await api.client.get(path.format(conversation, sha256), headers=headers)
        assert response.status_code == 404, response.text
        anonymous = response.text.replace(conversation, "c-missing")
        assert anonymous.replace(sha256, digest(SCREENSHOT)) == missing.text
        assert "etag" not in response.headers

    for malformed in ("abc", digest(SCREENSHOT).upper()):
        response = await api.client.get(path.format(cid, malformed), headers=bob)
        body = assert_problem(response, 422, "invalid-request")
        assert [e["location"] for e in body["errors"]] == ["path.sha256"]
    assert_problem(await api.client.get(path.format(cid, "0" * 64)), 401, "unauthorized")


async def test_anthropic_agent_input_is_the_sdks_keyword_arguments_and_opens_with_thinking(
    api: Api,
) -> None:
    cid = await appended(api, TOOL_LOOP)
    body = await agent_input(api, cid, format="anthropic", system_prompt="Be brief.")
    assert body["format"] == "anthropic" and body["first_seq"] == 1 and body["dropped"] == 0
    request = body["request"]
    assert set(request) == {"system", "messages"} and request["system"] == "Be brief."
    check_anthropic(request)
    turns = request["messages"]
    last_assistant = [t for t in turns if t["role"] == "assistant"][-1]
    assert last_assistant["content"][0] == THINKING
    assert [b["type"] for b in last_assistant["content"]] == ["thinking", "text", "tool_use"]
    (result,) = turns[-1]["content"]
    assert result["content"][1] == {  # the screenshot's bytes are back for the model
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": SCREENSHOT},
    }

    # Forwarded as it is, the SDK takes it and sends exactly it.
    sent: list[dict[str, Any]] = []
    reply = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "No rain: 18 C and clear."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 9},
    }
    async with sdk_http_client(sent, reply) as http:
        client = AsyncAnthropic(api_key="test", http_client=http, max_retries=0)
        await client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, **request)
    assert sent == [{"model": "claude-sonnet-4-5", "max_tokens": 1024, **request}]


@pytest.mark.parametrize("format", ["openai-chat", "openai-responses"])
async def test_openai_agent_input_is_the_sdks_keyword_arguments(api: Api, format: str) -> None:
    cid = await appended(api, TOOL_LOOP)
    body = await agent_input(api, cid, format=format, user_message=IMAGE_BY_URL)
    request = body["request"]
    sent: list[dict[str, Any]] = []
    async with sdk_http_client(sent, {"id": "x", "object": "response"}) as http:
        client = AsyncOpenAI(api_key="test", http_client=http, max_retries=0)
        if format == "openai-chat":
            assert set(request) == {"messages"}
            check_openai_chat(request["messages"])
            assert request["messages"][-1]["content"][1] == {
                "type": "image_url",
                "image_url": {"url": "https://example.com/paris.jpg", "detail": "low"},
            }
            await client.chat.completions.create(model="gpt-4.1", **request)
        else:
            assert set(request) == {"input"}
            check_openai_responses(request["input"])
            assert SIGNATURE not in json.dumps(request)  # Claude's thinking is Claude's only
            await client.responses.create(model="gpt-4.1", **request)
    assert sent == [{"model": "gpt-4.1", **request}]


async def test_a_bad_part_is_a_422_naming_its_field_and_stores_nothing(api: Api) -> None:
    alice = await api.auth("alice")
    cid = (await new_conversation(api))["id"]
    url = f"/v1/conversations/{cid}/messages"
    image = TOOL_LOOP[2]["content"][1]
    cases = [
        ({**image, "data": "not base64!"}, "messages[2].content[1].data"),
        ({**image, "media_type": "image/jpeg"}, "messages[2].content[1].data"),
        ({**image, "media_type": "image/svg+xml"}, "messages[2].content[1].media_type"),
        ({**image, "url": "https://example.com/a.png"}, "messages[2].content[1]"),
        (THINKING, "messages[2].content[1].type"),  # thinking is the assistant's
    ]
    for part, field in cases:
        messages = [*TOOL_LOOP[:2], {**TOOL_LOOP[2], "content": [TOOL_LOOP[2]["content"][0], part]}]
        response = await api.client.post(url, json={"messages": messages}, headers=alice)
        body = assert_problem(response, 422, "invalid-input")
        assert body["field"] == field, body
        assert body["detail"].startswith(f"{field}: ")

    # Shapes the schema does not allow: fields convodb sets, unknown types, neither str nor list.
    shapes = [
        ({**image, "attachment": digest(SCREENSHOT)}, "body.messages.0.content.parts.0.image"),
        ({"type": "video", "url": "https://example.com/v.mp4"}, "body.messages.0.content.parts.0"),
    ]
    for part, location in shapes:
        messages = [{"role": "user", "content": [part]}]
        response = await api.client.post(url, json={"messages": messages}, headers=alice)
        body = assert_problem(response, 422, "invalid-request")
        assert [e["location"].startswith(location) for e in body["errors"]] == [True], body
    not_content = {"messages": [{"role": "user", "content": 7}]}
    body = assert_problem(
        await api.client.post(url, json=not_content, headers=alice), 422, "invalid-request"
    )
    assert body["errors"] == [
        {
            "location": "body.messages.0.content",
            "message": "Input should be a string or a list of content parts",
        }
    ]

    window = await api.client.post(
        f"/v1/conversations/{cid}/agent-input",
        json={"user_message": [IMAGE_BY_URL[0], {**image, "data": "AAAA"}]},
        headers=alice,
    )
    assert assert_problem(window, 422, "invalid-input")["field"] == "user_message[1].data"
    assert (await api.client.get(f"/v1/conversations/{cid}", headers=alice)).json()["last_seq"] == 0


async def test_a_request_over_the_body_limit_is_413_until_the_operator_raises_it(
    db: Database,
) -> None:
    big = noisy_png(200, 200)  # 40 KB of pixels that do not compress: 54 KB as base64
    messages = [
        {"role": "user", "content": [{"type": "image", "data": big, "media_type": "image/png"}]}
    ]
    for max_body_bytes, status in ((32 * 1024, 413), (128 * 1024, 201)):
        app = create_app(settings(max_body_bytes=max_body_bytes), database=db)
        async with make_client(app) as client:
            api = Api(db, app, client)
            cid = (await new_conversation(api))["id"]
            response = await client.post(
                f"/v1/conversations/{cid}/messages",
                json={"messages": messages},
                headers=await api.auth("alice"),
            )
            assert response.status_code == status, response.text


async def test_openapi_documents_each_part_type_both_ways(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    content = schemas["MessageIn"]["properties"]["content"]["anyOf"][0]["oneOf"][1]["items"]
    mapping = content["discriminator"]["mapping"]
    assert set(mapping) == set(PART_TYPES) == set(PART_MODELS)
    stored = schemas["MessageOut"]["properties"]["content"]["anyOf"][1]["items"]
    assert set(stored["discriminator"]["mapping"]) == set(PART_TYPES)
    for kind, (part_in, part_out) in PART_MODELS.items():
        assert mapping[kind].endswith(f"/{part_in.__name__}")
        for model in (part_in, part_out):
            schema = schemas[model.__name__]
            assert schema["additionalProperties"] is False and schema["description"]
            assert all(p.get("description") for p in schema["properties"].values()), model
        # Input: exactly what a caller may set; output: the record's fields, without data.
        assert set(part_in.model_fields) == _INPUT_FIELDS[kind] | {"type"}
        record = set(PART_TYPES[kind].__dataclass_fields__)
        media = kind in ("image", "file", "audio")
        assert set(part_out.model_fields) == record - ({"data"} if media else set())
    examples = schemas["AppendRequest"]["examples"]
    assert any(isinstance(m.get("content"), list) for e in examples for m in e["messages"])

    operation = document["paths"]["/v1/conversations/{conversation_id}/attachments/{sha256}"]
    responses = operation["get"]["responses"]
    assert {"image/png", "application/pdf", "text/html", "audio/wav"} <= set(
        responses["200"]["content"]
    )
    assert "304" in responses and "404" in responses
    agent = schemas["AgentInputOut"]
    assert set(agent["required"]) == {"format", "request", "token_count", "dropped", "first_seq"}
