"""A LangGraph chat graph checkpointed in convodb: each thread is a conversation of one user.

Offline (the "model" is a function) on the embedded SQLite default.
Run: python examples/langgraph_saver.py   (writes ./langgraph_saver.db; CONVODB_DATABASE_URL
overrides it). Needs ``pip install 'convodb[langgraph]' langgraph``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from langchain_core.messages import AIMessage, RemoveMessage
from langgraph.graph import START, MessagesState, StateGraph

from convodb import ConversationService, Database
from convodb.integrations.langgraph import ConvodbSaver


def chatbot(state: MessagesState) -> dict[str, Any]:
    question = state["messages"][-1].content
    return {"messages": [AIMessage(f"You said: {question}")]}


async def main() -> None:
    url = os.environ.get("CONVODB_DATABASE_URL", "sqlite:///langgraph_saver.db")
    async with Database(url) as db:
        await db.create_all()
        saver = ConvodbSaver(database=db, user_id="alice")
        builder = StateGraph(MessagesState)
        builder.add_node("chatbot", chatbot)
        builder.add_edge(START, "chatbot")
        graph = builder.compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": "demo"}}

        for text in ("Hello!", "How are you?"):
            turn: Any = {"messages": [("user", text)]}
            result = await graph.ainvoke(turn, config)
        print("graph state:", [m.content for m in result["messages"]])

        # The thread is a convodb conversation: every message stored once, readable by
        # convodb's own API (windows, formats, export, HTTP).
        conversation_id = saver.conversation_id("demo")
        async with db.session() as session:
            page = await ConversationService(session).list_messages(conversation_id, "alice")
        print("convodb:", [(m.seq, m.role, m.text) for m in page.items])

        # RemoveMessage removes the convodb message too; older checkpoints keep it.
        first = result["messages"][0]
        await graph.aupdate_state(config, {"messages": [RemoveMessage(id=str(first.id))]})
        async with db.session() as session:
            page = await ConversationService(session).list_messages(conversation_id, "alice")
        print("after RemoveMessage:", [(m.seq, m.role, m.text) for m in page.items])
        history = graph.aget_state_history(config)
        counts = [len(s.values.get("messages", [])) async for s in history]
        print("messages per checkpoint, newest first:", counts)

        await saver.adelete_thread("demo")  # deletes the conversation with its checkpoints


if __name__ == "__main__":
    asyncio.run(main())
