"""Stored messages in the shapes model APIs accept, and model responses back into messages.

Pure functions: no I/O. Each ``to_*`` function turns history (oldest first), a system prompt,
a pinned summary and the new user message into one API's input, and guarantees that input is
well-formed for that API whatever the history holds:

* Tool results are placed right after the assistant message that made the calls, in call
  order (the APIs require it; stored order is kept for everything else). Results whose call is
  missing, duplicate results (the newest wins) and calls without all their results are left
  out, by the same rule as :mod:`convodb.history` windows.
* The system prompt and the summary come first; the user message comes last.

Anthropic's Messages API needs more: ``system`` is a separate parameter (stored system
messages join it, in order); consecutive turns of one role are merged into one turn; tool
results travel as ``tool_result`` blocks in a user turn, before any text; the first turn must
be a user turn, so a history that starts with an assistant message gets a short placeholder
user turn (:data:`ANTHROPIC_LEADING_USER_TEXT`) rather than losing that message; and tool
arguments must be a JSON object, so arguments that are not one are sent as
``{"_raw_arguments": "<the text>"}`` (:data:`RAW_ARGUMENTS_KEY`) — the model sees what it
sent, and :func:`from_anthropic` turns that back into the original text. Anthropic ids allow only
``[A-Za-z0-9_-]``; other call ids are replaced by a stable digest, for calls and results alike.

The ``from_*`` functions parse a model's output (and the tool results an agent adds) into
:class:`~convodb.NewMessage` lists, so a whole agent turn is saved with one append. Reasoning
items and blocks, and calls to provider-hosted tools (web search, code interpreter, ...), are
not stored: they are not function calls convodb can replay, and their visible result is part of
the message text.

``build_message_array`` and ``message_to_dict`` are the seed's helpers, fixed: the seed
dropped ``tool_calls`` and ``tool_call_id``, which made its arrays invalid input for the
OpenAI Chat Completions API as soon as a tool was used. They keep that behaviour: they neither
reorder nor drop messages.
"""

from __future__ import annotations

from ._anthropic import ANTHROPIC_LEADING_USER_TEXT, RAW_ARGUMENTS_KEY, from_anthropic, to_anthropic
from ._common import MessageLike
from ._dispatch import FORMATS, format_messages, parse_response
from ._openai_chat import from_openai_chat, to_openai_chat, to_openai_chat_messages
from ._openai_responses import from_openai_responses, to_openai_responses_input
from ._plain import to_plain
from ._seed import build_message_array, message_to_dict

__all__ = [
    "ANTHROPIC_LEADING_USER_TEXT",
    "FORMATS",
    "RAW_ARGUMENTS_KEY",
    "MessageLike",
    "build_message_array",
    "format_messages",
    "from_anthropic",
    "from_openai_chat",
    "from_openai_responses",
    "message_to_dict",
    "parse_response",
    "to_anthropic",
    "to_openai_chat",
    "to_openai_chat_messages",
    "to_openai_responses_input",
    "to_plain",
]
