"""Drop-in memory for agent frameworks, each behind its own extra:

- ``convodb.integrations.openai_agents.ConvodbSession``: the OpenAI Agents SDK's ``Session``
  (``pip install 'convodb[openai-agents]'``);
- ``convodb.integrations.langgraph.ConvodbSaver``: a LangGraph checkpoint saver
  (``pip install 'convodb[langgraph]'``);
- ``convodb.integrations.llama_index.ConvodbChatStore``: LlamaIndex's ``AsyncDBChatStore``
  for ``Memory`` (``pip install 'convodb[llama-index]'``).

Each module imports its framework; this package imports none. Every adapter stores through
:class:`convodb.ConversationService`, so a conversation a framework wrote is read by convodb's
windows, formats, export and HTTP API, and the owner is checked on every statement.
"""
