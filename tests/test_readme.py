"""The README's front door works as printed: the quickstart and the main job run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests._http import start_server
from tests.test_formats_parts import ANSWER, PNG

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_quickstart_is_short_and_runs_as_printed(tmp_path: Path) -> None:
    quickstart = _python_blocks()[0]
    assert len(quickstart.splitlines()) < 25
    result = subprocess.run(
        [sys.executable, "-c", quickstart], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "'tool_calls': [{'id': 'call_1', 'type': 'function'" in result.stdout
    assert "{'role': 'tool', 'content': '18°C', 'tool_call_id': 'call_1'}" in result.stdout
    assert (tmp_path / "chat.db").exists()


def _block_after(marker: str, language: str = "sh") -> str:
    """The ```sh (or other) block that follows ``<!-- readme: marker -->``."""
    found = re.search(rf"<!-- readme: {marker} -->\n```{language}\n(.*?)```", README, flags=re.S)
    assert found, f"README has no block marked {marker!r}"
    return found.group(1)


def test_main_job_serves_and_the_curl_session_runs_as_printed(tmp_path: Path) -> None:
    main_job = _block_after("main job")
    assert main_job.strip().endswith(".venv/bin/convodb serve")
    env = {"CONVODB_DATABASE_URL": f"sqlite:///{tmp_path / 'convodb.db'}"}
    server = start_server(env=env)  # the main job's last command, on a free port
    try:
        session = (
            _block_after("curl session")
            .replace(".venv/bin/convodb", f"{sys.executable} -m convodb")
            .replace("127.0.0.1:8000", server.base_url.removeprefix("http://"))
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", session],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    appended, agent_input = _json_documents(result.stdout)  # curl adds no newline
    assert [m["seq"] for m in appended["messages"]] == [1, 2, 3]
    request = agent_input["request"]  # the SDK call's keyword arguments, to forward as they are
    assert request["system"] == "Be brief."
    blocks = [b["type"] for turn in request["messages"] for b in turn["content"]]
    assert blocks == ["text", "tool_use", "tool_result", "text"]


def _json_documents(text: str) -> list[Any]:
    decoder, documents, at = json.JSONDecoder(), [], 0
    while at < len(text):
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
        while at < len(text) and text[at].isspace():
            at += 1
    return documents


def test_quickstart_example_runs_on_embedded_sqlite(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert '"tool_call_id": "call_1"' in result.stdout
    assert (tmp_path / "convodb.db").exists()


def test_agent_loop_example_saves_turns_and_rebuilds_requests_in_both_shapes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "agent_loop.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for fmt in ("openai-chat", "anthropic"):
        assert f"[{fmt}] Weather in Paris? -> It is 18°C, sunny." in result.stdout
        assert f"[{fmt}] And in Oslo? -> It is 4°C, rain." in result.stdout
    # OpenAI: system + 4 messages per turn; Anthropic: system apart, 4 turns per agent turn.
    assert re.search(
        r"\[openai-chat\] next request: \d+ tokens, 9 messages, 0 dropped", result.stdout
    )
    assert re.search(
        r"\[anthropic\] next request: \d+ tokens, 8 messages, 0 dropped", result.stdout
    )


# The content-parts sample continues the library quickstart: it uses its ``chat`` and
# ``conversation``, a chart (``chart_png``) and Claude's ``response``.
_PARTS_PRELUDE = """
import asyncio, json
from convodb import ConversationService, Database

chart_png = json.loads({chart_png!r})
response = json.loads({response!r})

async def main() -> None:
    async with Database("sqlite:///chat.db") as db:
        await db.create_all()
        async with db.session() as session:
            chat = ConversationService(session)
            conversation = await chat.create_conversation("alice")
{sample}
            print(json.dumps(request.messages))

asyncio.run(main())
"""


def test_content_parts_sample_runs_and_replays_the_image_and_the_thinking(tmp_path: Path) -> None:
    sample = _block_after("content parts", "python")
    assert len(sample.splitlines()) <= 15
    script = _PARTS_PRELUDE.format(
        chart_png=json.dumps(PNG),
        response=ANSWER.model_dump_json(),
        sample="\n".join(" " * 12 + line for line in sample.splitlines()),
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    question, claude, new = json.loads(result.stdout)
    assert question["content"] == [
        {"type": "text", "text": "What does this chart show?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]
    thinking = ANSWER.content[0].model_dump()
    assert claude == {
        "role": "assistant",
        "content": [thinking, {"type": "text", "text": "It is 18 C and clear in Paris."}],
    }
    assert new == {"role": "user", "content": [{"type": "text", "text": "And the trend?"}]}


def test_thinking_agent_example_replays_thinking_first_and_stores_the_screenshot_once(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "thinking_agent.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Each continuation passed the stand-in's checks (thinking first, signatures unchanged),
    # and the screenshot reached the model: it read the PNG's size from the request.
    assert "  thinking (signed): The 32x20 screenshot reads Paris: 18°C, sunny." in out
    assert "  claude: It is 18°C and sunny in Paris." in out
    assert "  claude: It is 4°C and rainy in Oslo." in out
    assert "stored: 8 messages, 2 screenshots in them, 1 attachment (image/png, 111 bytes)" in out
    assert "next request: 9 turns, 4 thinking blocks as Claude signed them, 2 screenshots" in out
    # Without its thinking block the same continuation is refused, as the API refuses it.
    assert (
        "  400 messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
        "`text`. When `thinking` is enabled, a final `assistant` message must start with a "
        "thinking block"
    ) in out
    assert list(tmp_path.iterdir()) == []  # its database was a temporary file, removed


def _run_example(name: str, tmp_path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / "examples" / name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_agents_sdk_example_runs_a_tool_turn_and_remembers_it(tmp_path: Path) -> None:
    out = _run_example("openai_agents_session.py", tmp_path)
    assert '2. assistant get_weather({"city": "Paris"})' in out
    assert "3. tool      18°C, sunny" in out
    assert "Yes: I see 4 earlier items of our conversation." in out


def test_langgraph_example_stores_messages_once_and_removes_them(tmp_path: Path) -> None:
    out = _run_example("langgraph_saver.py", tmp_path)
    assert "convodb: [(1, 'user', 'Hello!'), (2, 'assistant', 'You said: Hello!')," in out
    assert "after RemoveMessage: [(2, 'assistant', 'You said: Hello!')," in out


def test_llama_index_example_archives_the_oldest_turns(tmp_path: Path) -> None:
    out = _run_example("llama_index_memory.py", tmp_path)
    assert "memory holds 4 messages; 6 older ones are archived:" in out
    assert "  archived user      Question 1: what should I pack for Paris in spring?" in out
    assert "  seq  7 user      Question 4: what should I pack for Paris in spring?" in out
