"""Claude with extended thinking and tools on convodb: every tool-loop request is one it accepts.

With thinking enabled, the Messages API rejects a tool-loop continuation unless Claude's last
assistant turn comes back opening with its thinking block, signature unchanged:

    400 messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found
    `text`. When `thinking` is enabled, a final `assistant` message must start with a
    thinking block ...

A store that keeps only text and tool calls loses that block, and the agent's second request
fails. convodb stores the thinking as a part of the assistant message and replays it first in
its turn, byte for byte, in every window built from the store. The tool here takes a
screenshot: its PNG is stored once per conversation, apart from the messages, and sent back as
an image in each window that holds the result.

A scripted stand-in plays Claude so the example runs offline. It checks each request the way
the API does (the rule above, and that every thinking block it signed comes back unchanged),
then answers with ``Message``-shaped dicts. To talk to Claude, pass ``anthropic.AsyncAnthropic()``
instead of ``ScriptedClaude()``; the call is the same:

    response = await client.messages.create(
        model="claude-sonnet-4-5", max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048}, tools=TOOLS,
        **agent_input.kwargs,
    )

``parse_response("anthropic", response)`` takes the SDK's ``Message`` as it is. (The last
lines of ``run`` replay a request to the stand-in only, to show the API's error.)

Run: python examples/thinking_agent.py
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import struct
import tempfile
from pathlib import Path
from typing import Any

from convodb import (
    ConversationService,
    Database,
    ImagePart,
    NewMessage,
    StoredMessage,
    TextPart,
    ThinkingPart,
    ToolCall,
    parse_response,
)

MODEL = "claude-sonnet-4-5"
THINKING = {"type": "enabled", "budget_tokens": 2048}
MAX_TOKENS = 4096  # of each reply, thinking included: more than the thinking budget
SYSTEM = "You answer weather questions. Look at the forecast page before you answer."
WINDOW_TOKENS = 8000  # the history sent with each request, at most
TOOLS = [
    {
        "name": "screenshot",
        "description": "A screenshot of a web page, with the text on it.",
        "input_schema": {
            "type": "object",
            "properties": {"url": {"type": "string"}},
            "required": ["url"],
        },
    }
]
FORECAST_URL = "https://forecast.example/europe"
FORECAST_TEXT = "Paris: 18°C, sunny. Oslo: 4°C, rainy."
# A real 32x20 PNG (a title bar, a sun, two lines of text): the forecast page, captured.
FORECAST_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAUCAIAAABj86gYAAAANklEQVR42mOQ95tFU8QwagFBC/7TGAwzC75uZ0BDoxYQ"
    "b4ExKWAYB9FA5gOSwn0Y5+RRC7ABAAGKEE9OeiN/AAAAAElFTkSuQmCC"
)


def screenshot(url: str) -> list[TextPart | ImagePart]:
    """The tool: the page's text and a picture of it, as the tool result's content parts."""
    return [TextPart(text=FORECAST_TEXT), ImagePart(data=FORECAST_PNG, media_type="image/png")]


# -- the stand-in for Claude -----------------------------------------------------------------


class BadRequestError(Exception):
    """What the API answers (HTTP 400, ``invalid_request_error``) to a request it rejects."""


class ScriptedClaude:
    """Claude with thinking enabled, scripted: checks each request as the Messages API does,
    thinks (a signed thinking block), then calls the screenshot tool or answers from its
    result."""

    def __init__(self) -> None:
        self.messages = self  # ``client.messages.create(...)``, as on the SDK's client
        self.requests: list[dict[str, Any]] = []
        self._key = b"scripted-claude"  # signs thinking; only the signer can verify it
        self._calls = 0

    async def create(self, **request: Any) -> dict[str, Any]:
        self._check(**request)
        self.requests.append(request)
        turns = request["messages"]
        question = next(
            b["text"]
            for t in reversed(turns)
            if t["role"] == "user"
            for b in _blocks(t)
            if b["type"] == "text"
        )
        city = "Oslo" if "Oslo" in question else "Paris"
        results = [b for b in _blocks(turns[-1]) if b["type"] == "tool_result"]
        if not results:
            self._calls += 1
            call = {"url": FORECAST_URL}
            return self._message(
                f"The forecast page lists {city}; a screenshot of it will tell.",
                "Let me look at the forecast page.",
                {
                    "type": "tool_use",
                    "id": f"toolu_0{self._calls}",
                    "name": "screenshot",
                    "input": call,
                },
            )
        text, image = results[-1]["content"]  # the screenshot came back as an image block
        width, height = struct.unpack(">II", base64.b64decode(image["source"]["data"])[16:24])
        temperature, weather = next(
            line.removeprefix(f"{city}: ").rstrip(".").split(", ")
            for line in text["text"].split(". ")
            if line.startswith(city)
        )
        return self._message(
            f"The {width}x{height} screenshot reads {city}: {temperature}, {weather}.",
            f"It is {temperature} and {weather} in {city}.",
        )

    def _check(
        self, *, messages: list[dict[str, Any]], max_tokens: int, thinking: dict[str, Any], **_: Any
    ) -> None:
        """The API's rules this example is about (the real API checks many more)."""
        if max_tokens <= thinking["budget_tokens"]:
            raise BadRequestError("`max_tokens` must be greater than `thinking.budget_tokens`")
        for i, turn in enumerate(messages):
            for j, block in enumerate(_blocks(turn)):
                if block["type"] == "thinking" and not hmac.compare_digest(
                    block["signature"], self._sign(block["thinking"])
                ):
                    at = f"messages.{i}.content.{j}"
                    raise BadRequestError(f"{at}: Invalid `signature` in `thinking` block")
        last = len(messages) - 1
        if any(b["type"] == "tool_result" for b in _blocks(messages[last])):
            found = _blocks(messages[last - 1])[0]["type"]
            if found not in ("thinking", "redacted_thinking"):
                raise BadRequestError(
                    f"messages.{last - 1}.content.0.type: Expected `thinking` or "
                    f"`redacted_thinking`, but found `{found}`. When `thinking` is enabled, a "
                    "final `assistant` message must start with a thinking block (preceeding the "
                    "lastmost set of `tool_use` and `tool_result` blocks). We recommend you "
                    "include thinking blocks from previous turns. To avoid this requirement, "
                    "disable `thinking`."
                )

    def _sign(self, thinking: str) -> str:
        digest = hmac.new(self._key, thinking.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def _message(self, thinking: str, text: str, *tool_use: dict[str, Any]) -> dict[str, Any]:
        """An ``anthropic.types.Message``, as a dict."""
        return {
            "id": f"msg_{len(self.requests):02d}",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [
                {"type": "thinking", "thinking": thinking, "signature": self._sign(thinking)},
                {"type": "text", "text": text},
                *tool_use,
            ],
            "stop_reason": "tool_use" if tool_use else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }


def _blocks(turn: dict[str, Any]) -> list[dict[str, Any]]:
    content = turn["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


# -- the agent -------------------------------------------------------------------------------


async def agent_turn(
    service: ConversationService, cid: str, user: str, client: ScriptedClaude, question: str
) -> None:
    """One user turn: call Claude, run the tools it asks for, until it answers. Each request
    is built from the store; the turn is saved as it goes, atomically each time."""
    print(f"user: {question}")
    new = [NewMessage(role="user", content=question)]
    agent_input = await service.get_agent_input(
        cid,
        user,
        system_prompt=SYSTEM,
        user_message=question,
        max_tokens=WINDOW_TOKENS,
        format="anthropic",
    )
    while True:
        response = await client.messages.create(
            model=MODEL, max_tokens=MAX_TOKENS, thinking=THINKING, tools=TOOLS, **agent_input.kwargs
        )
        reply = parse_response("anthropic", response)  # thinking, text and calls, in order
        show(reply)
        new += reply
        calls = [c for m in reply for c in m.tool_calls or () if isinstance(c, ToolCall)]
        if not calls:
            break
        for call in calls:
            new.append(
                NewMessage(
                    role="tool",
                    content=screenshot(**json.loads(call.arguments)),
                    tool_call_id=call.id,
                    tool_name=call.name,
                )
            )
        stored = await service.save_conversation_messages(cid, user, new)
        show_results(stored[-len(calls) :])
        new = []
        agent_input = await service.get_agent_input(  # the tool loop continues from the store
            cid, user, system_prompt=SYSTEM, max_tokens=WINDOW_TOKENS, format="anthropic"
        )
    await service.save_conversation_messages(cid, user, new)


def show(reply: list[NewMessage]) -> None:
    for message in reply:
        content = message.content  # text alone is stored as a string
        for part in [TextPart(text=content)] if isinstance(content, str) else content or ():
            if isinstance(part, ThinkingPart):
                print(f"  thinking (signed): {part.thinking}")
            elif isinstance(part, TextPart):
                print(f"  claude: {part.text}")
        for call in message.tool_calls or ():
            if isinstance(call, ToolCall):
                print(f"  -> {call.name}({call.arguments})")


def show_results(results: list[StoredMessage]) -> None:
    for result in results:
        for image in result.content or ():
            if isinstance(image, ImagePart):  # as stored: no data, its bytes are an attachment
                print(
                    f"  <- {result.text} + {image.media_type} {image.width}x{image.height},",
                    f"attachment {(image.attachment or '')[:12]}…",
                )


async def run(url: str) -> None:
    async with Database(url) as db:
        await db.create_all()
        async with db.session() as session:
            service = ConversationService(session)
            cid = (await service.create_conversation("alice")).id
            client = ScriptedClaude()
            for question in ("What's the weather in Paris?", "And in Oslo?"):
                await agent_turn(service, cid, "alice", client, question)

            history = await service.get_conversation_history(cid, "alice")
            images = [p for m in history for p in m.content or () if isinstance(p, ImagePart)]
            # The same page twice: one attachment.
            (digest,) = {image.attachment for image in images if image.attachment}
            attachment = await service.get_attachment(cid, "alice", digest)
            print(
                f"\nstored: {len(history)} messages, {len(images)} screenshots in them,",
                f"1 attachment ({attachment.media_type}, {attachment.size} bytes)",
            )
            agent_input = await service.get_agent_input(
                cid, "alice", user_message="Thanks!", max_tokens=WINDOW_TOKENS, format="anthropic"
            )
            blocks = [b for t in agent_input.messages for b in _blocks(t)]
            inner = [c for b in blocks if b["type"] == "tool_result" for c in b["content"]]
            print(
                f"next request: {len(agent_input.messages)} turns,",
                f"{sum(b['type'] == 'thinking' for b in blocks)} thinking blocks as Claude",
                f"signed them, {sum(c['type'] == 'image' for c in inner)} screenshots",
            )

            # What a store that keeps only text and tool calls sends: the first continuation
            # with its thinking left out.
            continuation = client.requests[1]
            stripped = [
                {**t, "content": [b for b in _blocks(t) if b["type"] != "thinking"]}
                for t in continuation["messages"]
            ]
            try:
                await client.messages.create(**{**continuation, "messages": stripped})
            except BadRequestError as error:
                print("the first continuation as a store that keeps text and tool calls sends it:")
                print(f"  400 {error}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # the database is removed at the end
        asyncio.run(run(f"sqlite:///{Path(tmp) / 'thinking_agent.db'}"))


if __name__ == "__main__":
    main()
