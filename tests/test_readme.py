"""The README's front door works as printed: the quickstart and the main job run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_main_job_runs_on_embedded_sqlite(tmp_path: Path) -> None:
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
