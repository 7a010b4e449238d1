"""Stored messages in the shapes model APIs accept, and model responses back into messages.

Pure functions: no I/O. Each ``to_*`` function turns history (oldest first), a system prompt,
a pinned summary and the new user message into one API's input, and guarantees that input is
well-formed for that API whatever the history holds:

* Tool results are placed right after the assistant message that made the calls, in call
  order (the APIs require it; stored order is kept for everything else). Results whose call is
  missing, duplicate results (the newest wins) and calls without all their results are left
  out, by the same rule as :mod:`convodb.history` windows.
* The system prompt and the summary come first; the user message comes last. The user
  message is text or a list of parts (records or dicts); a dict's shape is checked here (a
  known ``type``, known fields), its values (media types, base64, sizes) by the service.

Anthropic's Messages API needs more: ``system`` is a separate parameter (stored system
messages join it, in order); consecutive turns of one role are merged into one turn; tool
results travel as ``tool_result`` blocks in a user turn, before any text; the first turn must
be a user turn, so a history that starts with an assistant message gets a short placeholder
user turn (:data:`ANTHROPIC_LEADING_USER_TEXT`) rather than losing that message; and tool
arguments must be a JSON object, so arguments that are not one are sent as
``{"_raw_arguments": "<the text>"}`` (:data:`RAW_ARGUMENTS_KEY`) — the model sees what it
sent, and :func:`from_anthropic` turns that back into the original text. Anthropic ids allow only
``[A-Za-z0-9_-]``; other call ids are replaced by a stable digest, for calls and results alike.
Text blocks that are empty or only whitespace are left out of history (the API rejects them).

Content parts
-------------
A message's content is text or a list of parts (see ``convodb._parts``). Each format sends a
part in its API's own shape where the API takes it, and otherwise a short text placeholder
that names it — ``[image: image/png, 1024x768]``, ``[file: report.pdf, application/pdf,
12 pages]``, ``[image: https://example.com/cat.png]``, ``[audio: wav]`` — so a part is never
silently lost and never makes the API reject the request:

==================  ====================  =====================  ======================
part                OpenAI Chat           OpenAI Responses       Anthropic
==================  ====================  =====================  ======================
text                text                  text                   ``text``
image: data, URL    ``image_url`` (a      ``input_image``        ``image`` (``base64``,
                    ``data:`` URL or the  (``detail`` ``auto``   ``url`` source)
                    URL, ``detail``)      unless set)
image: file id      placeholder           ``input_image``        ``image`` (``file``)
                                          (OpenAI ids)           (Anthropic ids)
PDF: data           ``file``              ``input_file``         ``document``
                    (``file_data`` as a   (``file_data`` as a    (``base64``)
                    ``data:`` URL, name)  ``data:`` URL, name)
PDF: URL            placeholder           ``input_file``         ``document`` (``url``)
                                          (``file_url``)
text file: data     text: a placeholder   ``input_file``         ``document``
(text/*, JSON)      line, then the text                          (``text`` source)
text file: URL      placeholder           ``input_file``         placeholder
file: file id       ``file`` (OpenAI      ``input_file``         ``document``
                    ids; PDF or unknown   (OpenAI ids)           (``file``; Anthropic
                    media type)                                  ids)
audio (wav, mp3)    ``input_audio``       placeholder            placeholder
data not loaded     placeholder           placeholder            placeholder
thinking,           left out              left out               replayed unchanged,
redacted thinking                                                first in its turn
reasoning           left out              replayed in place      left out
provider item       left out              OpenAI's, in place     Anthropic's, in place
==================  ====================  =====================  ======================

* **Roles.** Images, files and audio go where the API takes them: user messages and tool
  results. Chat Completions tool messages take text only, so the media of a call's results
  follow the last result in one user message ("Attachments of the result of tool call ...")
  and each tool message names what was moved. In system and assistant messages media are
  placeholders. The :func:`to_plain` format writes a placeholder for every medium.
* **File ids.** Parts do not record which provider issued a ``file_id``; Anthropic's start
  with ``file_`` and OpenAI's never do, so each provider gets only ids of its own shape. Chat
  Completions takes files by id only as PDFs, so a file id with another media type is a
  placeholder there.
* **Reasoning is scoped to its provider**: a thinking block's signature, a reasoning item's
  encrypted content, a hosted tool's item verify only where they were made. They are replayed
  to that provider unchanged, in their place in the assistant message, and left out — not
  replaced by a placeholder — everywhere else; Chat Completions takes no reasoning at all.
  Anthropic: thinking and redacted thinking blocks open their assistant turn ("a final
  assistant message must start with a thinking block" when thinking is enabled); when
  messages merge into one turn, the first run of thinking blocks moves to the front.
  Responses: a ``reasoning`` item (id, summary, encrypted content) goes right before what
  followed it, the assistant's text and ``function_call`` items; one with nothing after it in
  its message (an answer cut short) is left out, as the API rejects it alone. Reasoning is
  replayed from assistant messages only.

The ``from_*`` functions parse a model's output (and the tool results an agent adds) into
:class:`~convodb.NewMessage` lists, so a whole agent turn is saved with one append. They keep
everything: Anthropic thinking and redacted thinking blocks, OpenAI reasoning items, hosted
tool calls and results of both (verbatim, as provider items), images, files and audio. Content
that is only text stays one string; content with anything else is a list of part records.

``build_message_array`` and ``message_to_dict`` are the seed's helpers, fixed: the seed
dropped ``tool_calls`` and ``tool_call_id``, which made its arrays invalid input for the
OpenAI Chat Completions API as soon as a tool was used. They keep that behaviour: they neither
reorder nor drop messages.
"""

from __future__ import annotations

from .._records import MessageLike
from ._anthropic import ANTHROPIC_LEADING_USER_TEXT, RAW_ARGUMENTS_KEY, from_anthropic, to_anthropic
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
