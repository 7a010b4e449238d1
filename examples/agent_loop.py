"""An agent loop with tools on convodb: save every turn, rebuild each request under a budget.

The same loop runs in OpenAI Chat and Anthropic shapes. A scripted stand-in plays the model
so the example runs offline; swap ``scripted_model`` for your client call, e.g.
``client.chat.completions.create(model=..., **request.kwargs).choices[0].message`` or
``client.messages.create(model=..., max_tokens=1024, **request.kwargs)``.

Run: python examples/agent_loop.py
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from convodb import ConversationService, Database, NewMessage, ToolCall, parse_response

SYSTEM = "You are a weather assistant. Use get_weather for facts."


def get_weather(city: str) -> str:
    return {"Paris": "18°C, sunny", "Oslo": "4°C, rain"}.get(city, "unknown")


def scripted_model(fmt: str, request: dict[str, Any]) -> dict[str, Any]:
    """Ask for the weather tool after a question, answer after a tool result."""
    last = request["messages"][-1]
    if fmt == "openai-chat":
        if last["role"] == "user":
            city = last["content"].split()[-1].rstrip("?")
            call = {"name": "get_weather", "arguments": json.dumps({"city": city})}
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": f"call_{city}", "type": "function", "function": call}],
            }
        return {"role": "assistant", "content": f"It is {last['content']}."}
    blocks = last["content"] if isinstance(last["content"], list) else []
    results = [b for b in blocks if b.get("type") == "tool_result"]
    if not results:
        city = blocks[-1]["text"].split()[-1].rstrip("?") if blocks else last["content"]
        return {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": f"toolu_{city}",
                    "name": "get_weather",
                    "input": {"city": city},
                }
            ],
        }
    return {
        "role": "assistant",
        "content": [{"type": "text", "text": f"It is {results[-1]['content']}."}],
    }


async def agent_turn(
    service: ConversationService, cid: str, user: str, fmt: str, question: str
) -> str:
    new: list[NewMessage] = [NewMessage(role="user", content=question)]
    request = await service.get_agent_input(
        cid, user, system_prompt=SYSTEM, user_message=question, max_tokens=2000, format=fmt
    )
    while True:
        reply = parse_response(fmt, scripted_model(fmt, request.kwargs))
        new += reply
        calls = [c for m in reply for c in m.tool_calls or () if isinstance(c, ToolCall)]
        if not calls:
            break
        for call in calls:  # run the tools, then let the model see their results
            result = get_weather(**json.loads(call.arguments))
            new.append(
                NewMessage(role="tool", content=result, tool_call_id=call.id, tool_name=call.name)
            )
        await service.save_conversation_messages(cid, user, new)  # the turn so far, atomically
        new = []
        request = await service.get_agent_input(
            cid, user, system_prompt=SYSTEM, max_tokens=2000, format=fmt
        )
    stored = await service.save_conversation_messages(cid, user, new)
    return stored[-1].text


async def main() -> None:
    async with Database("sqlite:///:memory:") as db:
        await db.create_all()
        for fmt in ("openai-chat", "anthropic"):
            async with db.session() as session:
                service = ConversationService(session)
                cid = (await service.create_conversation("alice")).id
                for question in ("Weather in Paris?", "And in Oslo?"):
                    answer = await agent_turn(service, cid, "alice", fmt, question)
                    print(f"[{fmt}] {question} -> {answer}")
                request = await service.get_agent_input(
                    cid, "alice", system_prompt=SYSTEM, max_tokens=2000, format=fmt
                )
                print(
                    f"[{fmt}] next request: {request.token_count} tokens,",
                    f"{len(request.messages)} messages, {request.dropped} dropped",
                )


if __name__ == "__main__":
    asyncio.run(main())
