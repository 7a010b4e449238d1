"""An OpenAI Agents SDK agent whose session memory is convodb.

``ConvodbSession`` replaces the SDK's ``SQLiteSession``: the runner loads the history from
convodb before each turn and saves what the turn produced, and the same conversation is then
read through convodb's own API (windows, formats, export, HTTP). A scripted model plays the
LLM so the example runs offline; drop ``model=`` from the ``Agent`` to use OpenAI's.

Run: python examples/openai_agents_session.py  (needs ``pip install 'convodb[openai-agents]'``)
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agents import Agent, ModelResponse, RunConfig, Runner, Usage, function_tool
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputItem,
    ResponseOutputMessage,
    ResponseOutputText,
)

from convodb import ConversationService, Database
from convodb.integrations.openai_agents import ConvodbSession


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return {"Paris": "18°C, sunny", "Oslo": "4°C, rain"}.get(city, "unknown")


def answer(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id="msg_1",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


class ScriptedModel(Model):
    """Calls get_weather for a question, answers from the tool's output, and shows on the
    second question that it received the first turn from the session."""

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        last = input[-1]
        output: list[ResponseOutputItem]
        if last.get("type") == "function_call_output":
            output = [answer(f"It is {last['output']}.")]
        elif "Paris" in str(last.get("content")):
            call = ResponseFunctionToolCall(
                id="fc_1",
                type="function_call",
                call_id="call_1",
                name="get_weather",
                arguments='{"city": "Paris"}',
            )
            output = [call]
        else:
            output = [answer(f"Yes: I see {len(input) - 1} earlier items of our conversation.")]
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


async def main(directory: Path) -> None:
    async with Database(f"sqlite:///{directory / 'chat.db'}") as db:
        await db.create_all()
        agent = Agent(name="weather", model=ScriptedModel(), tools=[get_weather])
        session = ConvodbSession("trip-planning", database=db, user_id="alice")
        config = RunConfig(tracing_disabled=True)

        for question in ("What's the weather in Paris?", "Did I ask you anything before?"):
            result = await Runner.run(agent, question, session=session, run_config=config)
            print(f"user: {question}\nagent: {result.final_output}")

        print(f"\nthe session holds {len(await session.get_items())} SDK items;")
        print("convodb holds them as these messages:")
        async with db.session() as s:
            service = ConversationService(s)
            page = await service.list_messages(session.conversation_id, "alice")
            for m in page.items:
                calls = ", ".join(f"{c.name}({c.arguments})" for c in m.tool_calls or ())
                print(f"  {m.seq}. {m.role:9} {m.text or calls}")
            # Any convodb reader works on it, e.g. a Chat Completions request for another model:
            request = await service.get_agent_input(
                session.conversation_id, "alice", max_messages=4
            )
            print(
                f"\na Chat Completions window of at most 4 messages: {request.kwargs['messages']}"
            )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
