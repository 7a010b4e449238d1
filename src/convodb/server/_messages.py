"""The message routes: append a batch, read pages or one message, and serve attachments'
bytes."""

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Path, Query, Response

from ._part_schemas import ATTACHMENT_MEDIA_TYPES
from ._problems import (
    CONVERSATION_NOT_FOUND,
    IDEMPOTENCY_KEY_REUSE,
    INVALID_INPUT,
    LIMIT_EXCEEDED,
    MESSAGE_NOT_FOUND,
)
from ._routing import (
    BODY_PROBLEMS,
    Authenticated,
    ConversationId,
    Cursor,
    json_response,
    ok,
    page_size,
    v1,
)
from ._schemas import (
    MAX_SEQ,
    SHA256_PATTERN,
    AppendRequest,
    AppendResponse,
    MessageOut,
    MessagePage,
    RemovedMessages,
    message_out,
)
from ._settings import Settings

__all__ = ["add_message_routes"]

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"
# An attachment is addressed by its content's digest: a URL's bytes never change, so clients
# may keep them for good. Private: the response needs the user's credentials.
ATTACHMENT_CACHE_CONTROL = "private, max-age=31536000, immutable"


def add_message_routes(app: FastAPI, settings: Settings) -> None:
    Limit = Annotated[int, page_size(settings)]

    @app.post(
        "/v1/conversations/{conversation_id}/messages",
        status_code=201,
        tags=["messages"],
        summary="Append messages",
        responses=ok(AppendResponse, 201)
        | v1(*BODY_PROBLEMS, CONVERSATION_NOT_FOUND, IDEMPOTENCY_KEY_REUSE),
    )
    async def append_messages(
        caller: Authenticated,
        conversation_id: ConversationId,
        body: AppendRequest,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                pattern=IDEMPOTENCY_KEY_PATTERN,
                description="Makes the append safe to retry: a retry with the same key and "
                "body returns the original response and stores nothing; the same key with "
                "a different body is a 409. 1-200 printable ASCII characters.",
                examples=["turn-7f3a"],
            ),
        ] = None,
    ) -> Response:
        """Append a batch atomically: every message is stored, in order, or none is."""
        messages = body.model_dump(exclude_unset=True)["messages"]  # one call, not one a message
        stored = await caller.service.save_conversation_messages(
            conversation_id, caller.user, messages, idempotency_key=idempotency_key
        )
        return json_response({"messages": [message_out(m) for m in stored]}, 201)

    @app.get(
        "/v1/conversations/{conversation_id}/messages",
        tags=["messages"],
        summary="Read messages",
        responses=ok(MessagePage) | v1(CONVERSATION_NOT_FOUND),
    )
    async def list_messages(
        caller: Authenticated,
        conversation_id: ConversationId,
        limit: Limit = 100,
        order: Annotated[
            Literal["asc", "desc"],
            Query(description="`asc`: oldest first; `desc`: newest first."),
        ] = "asc",
        cursor: Cursor = None,
        after_seq: Annotated[
            int | None,
            Query(
                ge=0,
                le=MAX_SEQ,
                description="Ascending order only, without a cursor: start after this seq, "
                "to follow a live conversation.",
            ),
        ] = None,
    ) -> Response:
        """One page of the conversation's messages, in either direction, by cursor."""
        page = await caller.service.list_messages(
            conversation_id,
            caller.user,
            limit=limit,
            order=order,
            cursor=cursor,
            after_seq=after_seq,
        )
        items = [message_out(m) for m in page.items]
        return json_response({"items": items, "next_cursor": page.next_cursor})

    @app.delete(
        "/v1/conversations/{conversation_id}/messages",
        tags=["messages"],
        summary="Remove messages",
        responses=ok(RemovedMessages) | v1(CONVERSATION_NOT_FOUND, INVALID_INPUT, LIMIT_EXCEEDED),
    )
    async def remove_messages(
        caller: Authenticated,
        conversation_id: ConversationId,
        newest: Annotated[
            int | None, Query(description="Remove the newest this many.", examples=[1])
        ] = None,
        oldest: Annotated[int | None, Query(description="Remove the oldest this many.")] = None,
        seqs: Annotated[
            list[int] | None,
            Query(
                description="Remove the messages with these seqs (repeat the parameter); "
                "seqs the conversation does not hold are ignored."
            ),
        ] = None,
    ) -> Response:
        """Remove messages: exactly one of `newest`, `oldest` and `seqs`.

        They are chosen under the conversation's lock, so concurrent removals never remove
        the same message twice. Seqs are never reused: the next message appended gets the
        seq after `last_seq`, and a removal leaves a gap. To edit the newest user message
        and regenerate, remove the newest messages and append the edited turn.
        """
        removed = await caller.service.remove_messages(
            conversation_id, caller.user, newest=newest, oldest=oldest, seqs=seqs
        )
        return json_response({"messages": [message_out(m) for m in removed]})

    @app.get(
        "/v1/conversations/{conversation_id}/messages/{seq}",
        tags=["messages"],
        summary="Get a message",
        responses=ok(MessageOut) | v1(CONVERSATION_NOT_FOUND, MESSAGE_NOT_FOUND),
    )
    async def get_message(
        caller: Authenticated,
        conversation_id: ConversationId,
        seq: Annotated[
            int,
            Path(
                ge=1,
                le=MAX_SEQ,
                description="The message's position: 1 to the conversation's `last_seq`.",
                examples=[1],
            ),
        ],
    ) -> Response:
        """One message, by its seq: exactly as an item of the message list.

        A missing conversation, or another user's, is a 404 `conversation-not-found` whatever
        the seq; a seq the caller's conversation does not hold is a 404 `message-not-found`.
        """
        message = await caller.service.get_message(conversation_id, caller.user, seq)
        return json_response(message_out(message))

    @app.get(
        "/v1/conversations/{conversation_id}/attachments/{sha256}",
        response_class=Response,
        tags=["messages"],
        summary="Get an attachment's bytes",
        responses=_attachment_responses() | v1(CONVERSATION_NOT_FOUND),
    )
    async def get_attachment(
        caller: Authenticated,
        conversation_id: ConversationId,
        sha256: Annotated[
            str,
            Path(
                description="The digest: a stored part's `attachment`.",
                pattern=SHA256_PATTERN,
                examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
            ),
        ],
        if_none_match: Annotated[
            str | None,
            Header(
                alias="If-None-Match",
                max_length=8192,
                description="ETags the client holds; a match is a 304 without the bytes.",
            ),
        ] = None,
    ) -> Response:
        """The binary data of an image, file or audio part, in its stored media type.

        Messages are read back without their parts' `data`; each such part names its data by
        `attachment`, the SHA-256 of the bytes, stored once per conversation. A digest the
        conversation does not hold is a 404, exactly like a missing conversation. Everything
        but an image is sent as a download (`Content-Disposition: attachment`), so that no
        stored document can run as a page of this server's origin.
        """
        attachment = await caller.service.get_attachment(conversation_id, caller.user, sha256)
        etag = f'"{attachment.sha256}"'
        headers = {
            "ETag": etag,
            "Cache-Control": ATTACHMENT_CACHE_CONTROL,
            "X-Content-Type-Options": "nosniff",
            # Should a browser render it anyway: no scripts, no requests, no same origin.
            "Content-Security-Policy": "default-src 'none'; sandbox",
        }
        if if_none_match is not None and _etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        if not attachment.media_type.startswith("image/"):
            headers["Content-Disposition"] = "attachment"
        return Response(attachment.data, media_type=attachment.media_type, headers=headers)


def _attachment_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI for the attachment route's 200 (bytes, in any stored media type) and 304."""

    def header(description: str) -> dict[str, Any]:
        return {"description": description, "schema": {"type": "string"}}

    cache = {
        "ETag": header("The digest, quoted: a strong validator for `If-None-Match`."),
        "Cache-Control": header(f"`{ATTACHMENT_CACHE_CONTROL}`: the bytes never change."),
    }
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        200: {
            "description": "The bytes, as their stored media type.",
            "content": dict.fromkeys(ATTACHMENT_MEDIA_TYPES, binary),
            "headers": cache
            | {
                "Content-Disposition": header("`attachment` for everything but images."),
                "X-Content-Type-Options": header("`nosniff`."),
                "Content-Security-Policy": header("`default-src 'none'; sandbox`."),
            },
        },
        304: {"description": "Not modified: `If-None-Match` holds its ETag.", "headers": cache},
    }


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value matches ``etag`` (RFC 9110 13.1.2: ``*`` matches,
    and the comparison is weak, so ``W/"x"`` matches ``"x"``)."""
    tags = (tag.strip() for tag in if_none_match.split(","))
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in tags)
