"""The ``convodb`` command: key management, init-db, db upgrade/current, and friendly
missing-extra errors."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convodb.cli._app import app
from convodb.migrations import HEAD
from tests._http import cli
from tests.fixtures.make_v0_1_0 import EXPECTED, SQLITE_FIXTURE

runner = CliRunner()


def invoke(database_url: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--database-url", database_url])
    return result.exit_code, result.stdout, result.stderr


def test_keys_create_list_revoke(database_url: str) -> None:
    code, out, err = invoke(database_url, "keys", "create", "--user", "alice", "--name", "bot")
    assert code == 0, err
    key_id = out.split()[3]
    token = out.strip().splitlines()[-1]
    assert token.startswith(f"cdb_{key_id}_")
    assert "shown once" in err

    code, service_token, _ = invoke(database_url, "keys", "create", "--service", "-q")
    assert code == 0 and service_token.startswith("cdb_") and len(service_token.split()) == 1

    code, listing, _ = invoke(database_url, "keys", "list")
    assert code == 0
    assert listing.splitlines()[0].split() == ["ID", "USER", "NAME", "CREATED", "REVOKED"]
    row = next(line for line in listing.splitlines() if line.startswith(key_id))
    assert "alice" in row and "bot" in row
    assert "(service)" in listing
    assert token.split("_", 2)[2] not in listing  # never the secret (which may contain "_")

    code, out, _ = invoke(database_url, "keys", "revoke", key_id)
    assert code == 0 and f"Revoked API key {key_id}" in out
    code, listing, _ = invoke(database_url, "keys", "list")
    assert key_id not in listing
    code, listing, _ = invoke(database_url, "keys", "list", "--all")
    assert key_id in listing and "UTC" in listing.splitlines()[-1]


def test_keys_errors_are_one_line_and_exit_1(database_url: str) -> None:
    code, _, err = invoke(database_url, "keys", "revoke", "no-such-key")
    assert code == 1 and err.startswith("error: no API key with id 'no-such-key'")
    code, _, err = invoke(database_url, "keys", "create")
    assert code == 1 and "--user USER or --service" in err
    code, _, err = invoke(database_url, "keys", "create", "--user", "a\x00b")
    assert code == 1 and "user_id" in err and "Traceback" not in err


def test_keys_revoke_takes_a_whole_token_and_never_prints_its_secret(database_url: str) -> None:
    code, token, _ = invoke(database_url, "keys", "create", "--user", "alice", "-q")
    assert code == 0
    token = token.strip()
    key_id, secret = token.removeprefix("cdb_").split("_", 1)
    code, out, err = invoke(database_url, "keys", "revoke", token)
    assert code == 0, err
    assert out.startswith(f"Revoked API key {key_id} ")
    assert secret not in out + err

    unknown = f"cdb_{'0' * 32}_{secret}"
    code, out, err = invoke(database_url, "keys", "revoke", unknown)
    assert code == 1
    assert secret not in out + err
    assert err.startswith(f"error: no API key with id '{'0' * 32}' (from the token cdb_{'0' * 32}_")


def test_version_prints_the_installed_package_version() -> None:
    result = cli("--version")  # a real process: the console script's own metadata
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"convodb {version('convodb')}\n"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["init-db"],
        ["keys"],
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke"],
        ["db"],
        ["db", "upgrade"],
        ["db", "current"],
        ["export"],
        ["import"],
        ["conversations"],
        ["conversations", "list"],
        ["conversations", "show"],
        ["purge"],
        ["erase-user"],
        ["stats"],
    ],
    ids=" ".join,
)
def test_help_shows_no_value_for_flags(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--help " in result.output
    assert "<bool>" not in result.output
    options = [m.group(1) for m in re.finditer(r"^  (-\S.*?)(?:  |$)", result.output, re.M)]
    flags = {
        "--dev",
        "--api-keys / --no-api-keys",
        "--service",
        "-q, --quiet",
        "--all",
        "--dry-run",
        "-y, --yes",
    }
    for option in options:
        assert option.endswith(">") != (option in flags | {"--help", "--version"}), option


def test_init_db_creates_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    code, out, err = invoke(url, "init-db")
    assert code == 0, err
    assert "convodb tables ready" in out


def test_db_upgrade_creates_then_keeps_the_schema_and_current_says_so(
    empty_database_url: str,
) -> None:
    code, out, err = invoke(empty_database_url, "db", "current")
    assert (code, out) == (0, f"current: none (head: {HEAD})\n")
    assert "`convodb db upgrade` migrates it" in err
    code, out, err = invoke(empty_database_url, "db", "upgrade")
    assert (code, out) == (0, f"upgraded: none -> {HEAD} (head)\n"), err
    code, out, err = invoke(empty_database_url, "db", "current")
    assert (code, out, err) == (0, f"current: {HEAD} (head: {HEAD})\n", "")
    code, out, err = invoke(empty_database_url, "db", "upgrade")
    assert (code, out) == (0, f"already at {HEAD} (head)\n"), err


def test_db_upgrade_migrates_a_0_1_0_database_named_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copyfile(SQLITE_FIXTURE, path)
    env = {"CONVODB_DATABASE_URL": f"sqlite:///{path}"}
    result = cli("db", "upgrade", env=env)  # a real process, the URL from the environment
    assert (result.returncode, result.stdout) == (0, f"upgraded: none -> {HEAD} (head)\n")
    listing = cli("keys", "list", "--all", env=env).stdout
    for key in json.loads(EXPECTED.read_text())["sqlite"]["snapshot"]["api_keys"]:
        assert key["id"] in listing


def test_db_upgrade_of_a_newer_schema_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    assert invoke(url, "db", "upgrade")[0] == 0
    with sqlite3.connect(tmp_path / "newer.db") as connection:
        connection.execute("UPDATE convodb_alembic_version SET version_num = 'from_the_future'")
    code, out, err = invoke(url, "db", "upgrade")
    assert code == 1 and out == ""
    assert err.startswith("error: the database schema is at revision 'from_the_future'")
    assert "a newer convodb migrated it" in err and len(err.splitlines()) == 1
    code, out, _ = invoke(url, "db", "current")
    assert (code, out) == (0, f"current: from_the_future (head: {HEAD})\n")


def _run_without(blocked: list[str], code: str) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, check=False
    )


def test_console_script_names_the_cli_extra_when_typer_is_missing() -> None:
    result = _run_without(["typer"], "from convodb.cli import main; main()")
    assert result.returncode == 1
    assert "pip install 'convodb[cli]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_names_the_server_extra_when_fastapi_is_missing() -> None:
    result = _run_without(
        ["fastapi"],
        "import sys; sys.argv = ['convodb', 'serve']\nfrom convodb.cli import main\nmain()",
    )
    assert result.returncode == 1
    assert "pip install 'convodb[server]'" in result.stderr


def test_import_convodb_needs_no_server_or_cli_extra() -> None:
    result = _run_without(
        ["fastapi", "starlette", "uvicorn", "jwt", "typer"],
        "import convodb\nprint(len(convodb.__all__))\n"
        "try:\n    import convodb.server\nexcept ImportError as exc:\n    print(exc.extra)\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(len(__import__("convodb").__all__)), "server"]


def test_database_errors_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    for url in (
        "postgresql://postgres@127.0.0.1:5432/convodb_no_such_database",
        f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}",
    ):
        result = cli("keys", "list", env={"CONVODB_DATABASE_URL": url})  # a real process
        assert result.returncode == 1
        assert result.stderr.startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr
