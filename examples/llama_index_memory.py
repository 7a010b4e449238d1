"""LlamaIndex's ``Memory`` on convodb, offline: a chat engine whose memory flushes old turns.

A ``SimpleChatEngine`` with LlamaIndex's ``MockLLM`` (no network, no API key) talks for a few
turns through a ``Memory`` whose small token limit makes it archive its oldest turns; the
messages live in convodb, per user, and convodb's own API reads them like any others.

Run: python examples/llama_index_memory.py   (writes ./llama_index_memory.db;
CONVODB_DATABASE_URL overrides it; needs ``pip install 'convodb[llama-index]'``)
"""

from __future__ import annotations

import asyncio
import os

from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import MockLLM
from llama_index.core.memory import Memory
from llama_index.core.storage.chat_store.base_db import MessageStatus

from convodb import ConversationService, Database
from convodb.integrations.llama_index import ConvodbChatStore

URL = os.environ.get("CONVODB_DATABASE_URL", "sqlite:///llama_index_memory.db")


async def main() -> None:
    async with Database(URL) as db:
        await db.create_all()
        store = ConvodbChatStore(database=db, user_id="alice")
        await store.delete_messages("support-42")  # start over on every run
        memory = Memory.from_defaults(
            session_id="support-42",
            chat_store=store,
            token_limit=60,  # tiny, to see the flush: 70% of it is for the chat history
            token_flush_size=10,
            tokenizer_fn=str.split,  # words as tokens: no tokenizer file to download
        )
        engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=5), memory=memory)
        for n in range(1, 6):
            await engine.achat(f"Question {n}: what should I pack for Paris in spring?")

        active = await memory.aget()
        archived = await memory.aget_all(MessageStatus.ARCHIVED)
        print(f"memory holds {len(active)} messages; {len(archived)} older ones are archived:")
        for flag, messages in (("archived", archived), ("active  ", active)):
            for message in messages:
                print(f"  {flag} {message.role.value:9} {message.content}")

        # The same messages through convodb's own API: ordinary conversations of alice.
        async with db.session() as session:
            service = ConversationService(session)
            page = await service.list_messages(store.conversation_id("support-42"), "alice")
        print(f"convodb conversation {store.conversation_id('support-42')}:")
        for stored in page.items:
            print(f"  seq {stored.seq:2} {stored.role:9} {stored.text}")


if __name__ == "__main__":
    asyncio.run(main())
