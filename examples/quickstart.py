"""convodb's main job on the embedded SQLite default: store a tool-using turn, rebuild the input.

Run: python examples/quickstart.py   (writes ./convodb.db; CONVODB_DATABASE_URL overrides it)
"""

from __future__ import annotations

import asyncio
import json
import os

from convodb import ConversationService, Database, NewMessage, ToolCall, build_message_array


async def main() -> None:
    async with Database(os.environ.get("CONVODB_DATABASE_URL", "sqlite:///convodb.db")) as db:
        await db.create_all()
        async with db.session() as session:
            service = ConversationService(session)
            conversation = await service.get_or_create_conversation(None, user_id="alice")
            # One agent turn, saved atomically: the question, the model's tool call,
            # the tool's result and the final answer.
            await service.save_conversation_messages(
                conversation.id,
                "alice",
                [
                    NewMessage(role="user", content="What's the weather in Paris?"),
                    NewMessage(
                        role="assistant",
                        tool_calls=[ToolCall("call_1", "get_weather", '{"city": "Paris"}')],
                    ),
                    NewMessage(
                        role="tool",
                        content="18°C, sunny",
                        tool_call_id="call_1",
                        tool_name="get_weather",
                    ),
                    NewMessage(role="assistant", content="It's 18°C and sunny in Paris."),
                ],
            )
            # The next request: load the latest history and hand the model its input.
            history = await service.get_conversation_history(conversation.id, "alice", limit=50)
            agent_input = build_message_array(
                history, "And tomorrow?", system_prompt="You are a weather assistant."
            )
        print(f"conversation {conversation.id} in {db.url.render_as_string()}")
        print(json.dumps(agent_input, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
