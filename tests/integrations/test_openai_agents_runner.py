"""``Runner.run(..., session=ConvodbSession(...))`` end to end, offline, on every database.

A scripted model stands in for the API: it returns canned responses and records the input
the runner sent it, so a test sees exactly what history the SDK replayed from convodb.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, ModelResponse, RunConfig, Runner, Usage, function_tool
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputItem,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
)
from openai.types.responses.response_reasoning_item import Summary

from convodb import ConversationService, Database, StoredMessage
from convodb.integrations.openai_agents import ConvodbSession


class ScriptedModel(Model):
    """Returns the scripted outputs in turn and records every input it is given."""

    def __init__(self, outputs: list[list[ResponseOutputItem]]) -> None:
        self.outputs = list(outputs)
        self.inputs: list[list[dict[str, Any]]] = []

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kw: Any
    ) -> ModelResponse:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else input
        self.inputs.append(json.loads(json.dumps(items)))
        return ModelResponse(output=self.outputs.pop(0), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the tests run the model without streaming")


def text(content: str, item_id: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=item_id,
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=content, annotations=[])],
    )


def call(name: str, arguments: str, call_id: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        id=f"fc_{call_id}", type="function_call", name=name, arguments=arguments, call_id=call_id
    )


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def part_types(message: StoredMessage) -> list[str]:
    return [p.type for p in message.content] if isinstance(message.content, tuple) else []


def without_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k not in ("id", "status")} for item in items]


async def test_a_run_over_several_turns_replays_its_history_from_convodb(db: Database) -> None:
    model = ScriptedModel(
        [
            [
                ResponseReasoningItem(
                    id="rs_1",
                    type="reasoning",
                    summary=[Summary(type="summary_text", text="need the weather")],
                    encrypted_content="ENC==",
                ),
                call("get_weather", '{"city":"Paris"}', "call_1"),
            ],
            [text("Sunny in Paris.", "msg_1")],
            [text("Still sunny.", "msg_2")],
            [text("Bye!", "msg_3")],
        ]
    )
    agent = Agent(name="weather", model=model, tools=[get_weather])
    config = RunConfig(tracing_disabled=True)
    session = ConvodbSession("trip", database=db, user_id="alice")

    first = await Runner.run(agent, "Weather in Paris?", session=session, run_config=config)
    second = await Runner.run(agent, "And tomorrow?", session=session, run_config=config)

    assert (first.final_output, second.final_output) == ("Sunny in Paris.", "Still sunny.")
    # Turn 2's model call got turn 1 back from the database: the call, its output, the answer.
    assert without_ids(model.inputs[2]) == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "need the weather"}],
            "encrypted_content": "ENC==",
        },
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny in Paris"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Sunny in Paris.", "annotations": []}],
        },
        {"role": "user", "content": "And tomorrow?"},
    ]
    items = await session.get_items()
    assert items[:-2] == model.inputs[2][:-1] and len(items) == 7

    async with db.session() as s:
        service = ConversationService(s)
        messages = (await service.list_messages(session.conversation_id, "alice")).items
        chat = await service.get_agent_input(session.conversation_id, "alice")
    assert [(m.role, m.text) for m in messages] == [
        ("user", "Weather in Paris?"),
        ("assistant", ""),
        ("tool", "sunny in Paris"),
        ("assistant", "Sunny in Paris."),
        ("user", "And tomorrow?"),
        ("assistant", "Still sunny."),
    ]
    step = messages[1]
    assert part_types(step) == ["reasoning"]
    assert [(c.id, c.name, c.arguments) for c in step.tool_calls or ()] == [
        ("call_1", "get_weather", '{"city":"Paris"}')
    ]
    assert (messages[2].tool_call_id, messages[2].tool_name) == ("call_1", "get_weather")
    assert [m["role"] for m in chat.kwargs["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]
    assert (
        chat.kwargs["messages"][1]["tool_calls"][0]["id"]
        == chat.kwargs["messages"][2]["tool_call_id"]
    )

    # A third run with a session limit sends only the newest items, as the SDK cuts them.
    limited = ConvodbSession("trip", database=db, user_id="alice", session_settings={"limit": 2})
    await Runner.run(agent, "Thanks", session=limited, run_config=config)
    assert without_ids(model.inputs[3]) == [
        {"role": "user", "content": "And tomorrow?"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Still sunny.", "annotations": []}],
        },
        {"role": "user", "content": "Thanks"},
    ]
    assert len(await session.get_items()) == 9
