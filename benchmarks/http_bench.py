"""The HTTP part of issue 5: ``convodb serve`` against a minimal FastAPI + raw-driver endpoint.

For each database, on one fresh database (a temp SQLite file, or ``convodb_bench_<hex>`` on
PostgreSQL, dropped at the end):

- convodb's schema is created and the read conversations bulk-loaded on the bare driver;
- an API key is made with ``convodb keys create --user bench-user --quiet``;
- two servers start as subprocesses on free 127.0.0.1 ports, each uvicorn with one worker,
  asyncio loop and h11 (what this venv has), log level ``warning``: ``convodb serve`` (API-key
  auth: the key is read on its first request; later requests' statements check that it is
  live as they do the work) and ``http_yardstick.py`` (FastAPI + the bare driver, the raw
  store's statements, a constant bearer-token compare);
- ``CLIENTS`` concurrent aiohttp clients (one keep-alive connection each) drive each server,
  each round bounded by a request count and a time cap; rounds alternate between the servers
  and the table shows the median round. Every response is checked (status, count, and for
  appends that ``seq`` continues the client's own conversation).

Workloads: ``append_1`` and ``append_10`` (each client appends to its own conversation),
``agent_input_50`` (``max_messages=50``, ``openai-chat``, on a conversation of ``history``
messages per client), and ``floor`` (``GET /healthz`` on the yardstick: uvicorn + FastAPI +
the client with no database, the ceiling both servers share on this machine).

The client runs in this process, on the same 2 cores as the server and the database, so
absolute numbers are lower than on separate machines; the ratio is the figure to read.
``python -m benchmarks.http_bench --profile --db sqlite`` samples both servers with py-spy
under the same load instead and prints the share of samples by layer (auth, store, request
parsing, response serialization, uvicorn/h11, new database connections, threads).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import httpx

from ._data import USER, Target, content_for, fresh_database, load_core, role_for
from .workloads import percentile

CLIENTS = 16
DIALECTS = ("sqlite", "postgresql")
"""The yardstick (``http_yardstick.py``) has no MariaDB backend: the HTTP part runs on these."""
SERVERS = ("yardstick", "convodb")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class HttpSizes:
    rounds: int
    requests: int  # per round, per workload, per server, over all clients
    cap_s: float  # per round
    warmup: int  # requests per workload per server before the first round
    history: int  # messages in each agent-input conversation


QUICK = HttpSizes(rounds=3, requests=320, cap_s=2.5, warmup=64, history=300)
FULL = HttpSizes(rounds=5, requests=3000, cap_s=15.0, warmup=400, history=300)
WORKLOADS: tuple[tuple[str, int], ...] = (
    ("append_1", 1),
    ("append_10", 10),
    ("agent_input_50", 50),
)


def server_available() -> bool:
    try:
        server = importlib.import_module("convodb.server")
    except ImportError:
        return False
    return hasattr(server, "create_app")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] http: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS picks it; a race with other programs is possible
    and shows as a server that does not start, which is reported)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _child_env(**extra: str) -> dict[str, str]:
    """This environment without convodb's settings (a stray CONVODB_DEV or JWT secret would
    change what is measured), plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CONVODB_") and k != "DATABASE_URL"
    }
    env.update(extra)
    return env


def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Server:
    """One uvicorn subprocess on 127.0.0.1; ``stop`` always ends it (TERM, then KILL)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, logs: Path):
        self.name, self.argv, self.env, self.port = name, argv, env, port
        self.log_path = logs / f"{name}.log"
        self.base_url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log_file = _open_log(self.log_path)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log_file.close()  # the child has its own descriptor

    async def ready(self) -> None:
        """Wait (bounded) until ``/readyz`` answers 200."""
        deadline = time.perf_counter() + READY_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as client:
            while time.perf_counter() < deadline:
                if self.proc is None or self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited at start-up:\n{_tail(self.log_path)}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(
            f"{self.name} not ready after {READY_TIMEOUT_S:.0f}s:\n{_tail(self.log_path)}"
        )

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def _create_schema(target: Target) -> None:
    from convodb import Database

    async with Database(target.convodb_url) as db:
        await db.create_all()


async def _create_key(target: Target) -> str:
    """``convodb keys create --user USER --quiet``, as docs/http.md shows it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "convodb",
        "keys",
        "create",
        "--user",
        USER,
        "--quiet",
        "--database-url",
        target.convodb_url,
        env=_child_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), READY_TIMEOUT_S)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    token = out.decode().strip()
    if proc.returncode != 0 or not token.startswith("cdb_"):
        raise RuntimeError(f"convodb keys create failed ({proc.returncode}): {err.decode()}")
    return token


# -- the load -------------------------------------------------------------------------------


@dataclass
class Tally:
    """What one round saw: latencies of checked-good responses, and everything else."""

    latencies: list[float]
    failures: Counter[str]
    elapsed: float = 0.0

    def result(self, per_request: int) -> dict[str, Any]:
        good = len(self.latencies)  # failed requests count as errors, never as throughput
        rps = good / self.elapsed if self.elapsed else float("nan")
        return {
            "requests": good,
            "rps": rps,
            "msg_s": rps * per_request if per_request else float("nan"),
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "errors": sum(self.failures.values()),
            "failures": dict(self.failures),
        }


Check = Callable[[int, int, bytes], str | None]
"""(client index, status, body) -> ``None`` when the response is right, else what is wrong."""
Request = tuple[str, str, bytes]
"""method, path, JSON body"""


async def drive(
    client: aiohttp.ClientSession,
    make: Callable[[int], Request],
    check: Check,
    requests: int,
    cap_s: float,
) -> Tally:
    """``CLIENTS`` tasks send requests until ``requests`` are sent in all or ``cap_s`` passes.

    Client ``w`` always uses the request ``make(w)`` builds (its own conversation), so checks
    can follow each conversation's ``seq``.
    """
    tally = Tally([], Counter())
    numbers = itertools.count()
    made = [make(w) for w in range(CLIENTS)]
    headers = {"content-type": "application/json"}
    deadline = time.perf_counter() + cap_s

    async def one(w: int) -> None:
        method, path, body = made[w]
        while next(numbers) < requests and time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                async with client.request(method, path, data=body, headers=headers) as response:
                    status, content = response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.failures[type(exc).__name__] += 1
                continue
            elapsed = time.perf_counter() - start
            problem = check(w, status, content)
            if problem is None:
                tally.latencies.append(elapsed)
            else:
                tally.failures[problem] += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(w) for w in range(CLIENTS)))
    tally.elapsed = time.perf_counter() - started
    return tally


class Workloads:
    """Requests and checks for one server; conversations are per server and per client."""

    def __init__(self, server: str, history: int) -> None:
        self.server = server
        self.history = history
        self.last_seq: dict[str, int] = {}

    def append_cid(self, batch: int, w: int) -> str:
        return f"{self.server}-a{batch}-{w:02d}"

    @staticmethod
    def read_cid(w: int) -> str:
        return f"h-{w:02d}"

    def conversations(self) -> list[tuple[str, int]]:
        return [(self.append_cid(b, w), 0) for _, b in WORKLOADS[:2] for w in range(CLIENTS)]

    def append(self, batch: int) -> tuple[Callable[[int], Request], Check]:
        def make(w: int) -> Request:
            messages = [
                {"role": role_for(i + 1), "content": content_for(20_000_000 + w * 100 + i)}
                for i in range(batch)
            ]
            path = f"/v1/conversations/{self.append_cid(batch, w)}/messages"
            return "POST", path, json.dumps({"messages": messages}).encode()

        def check(w: int, status: int, content: bytes) -> str | None:
            if status != 201:
                return f"status {status}"
            cid = self.append_cid(batch, w)
            last = self.last_seq.get(cid, 0)
            seqs = [m["seq"] for m in json.loads(content)["messages"]]
            self.last_seq[cid] = last + batch
            if seqs != list(range(last + 1, last + batch + 1)):
                return "seq gap or reorder"
            return None

        return make, check

    def agent_input(self, n: int) -> tuple[Callable[[int], Request], Check]:
        body = json.dumps({"format": "openai-chat", "max_messages": n}).encode()

        def make(w: int) -> Request:
            return "POST", f"/v1/conversations/{self.read_cid(w)}/agent-input", body

        def check(w: int, status: int, content: bytes) -> str | None:
            if status != 200:
                return f"status {status}"
            data = json.loads(content)
            messages = data["request"]["messages"]
            if len(messages) != n or data["first_seq"] != self.history - n + 1:
                return "wrong window"
            if messages[0].get("role") != "user" or "content" not in messages[-1]:
                return "not openai-chat"
            return None

        return make, check

    def floor(self) -> tuple[Callable[[int], Request], Check]:
        def make(w: int) -> Request:
            return "GET", "/healthz", b""

        def check(w: int, status: int, content: bytes) -> str | None:
            return None if status == 200 else f"status {status}"

        return make, check

    def of(self, workload: str, per: int) -> tuple[Callable[[int], Request], Check]:
        if workload == "floor":
            return self.floor()
        if workload.startswith("append"):
            return self.append(per)
        return self.agent_input(per)


def _client(base_url: str, token: str) -> aiohttp.ClientSession:
    """The load client. aiohttp, not httpx: on this machine httpx's connection pool tops out
    near 800 requests/s with ~100 ms p99 stalls even against a canned in-process server,
    which would cap both servers at the client's speed; aiohttp does ~14,000 there."""
    return aiohttp.ClientSession(
        base_url=base_url,
        headers={"authorization": f"Bearer {token}"},
        connector=aiohttp.TCPConnector(limit=CLIENTS),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


@dataclass
class Setup:
    """Both servers running on one loaded database, with a load client for each."""

    servers: dict[str, Server]
    clients: dict[str, aiohttp.ClientSession]
    work: dict[str, Workloads]


@contextlib.asynccontextmanager
async def _setup(dialect: str, history: int) -> AsyncIterator[Setup]:
    """A fresh database, loaded; a key; both servers up. Everything ends on exit, in reverse:
    clients, servers (TERM, then KILL), log directory, then the database is dropped."""
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        target = await stack.enter_async_context(fresh_database(dialect))
        await _create_schema(target)
        work = {name: Workloads(name, history) for name in SERVERS}
        loads = [(Workloads.read_cid(w), history) for w in range(CLIENTS)]
        for name in SERVERS:
            loads += work[name].conversations()
        await load_core(target, loads)
        convodb_token = await _create_key(target)
        yardstick_token = secrets.token_urlsafe(32)

        logs = Path(tempfile.mkdtemp(prefix="convodb_bench_http_"))
        stack.callback(shutil.rmtree, logs, ignore_errors=True)
        port_a = free_port()
        port_b = free_port()
        while port_b == port_a:
            port_b = free_port()
        servers = {
            "convodb": Server(
                "convodb",
                [sys.executable, "-m", "convodb", "serve", "--host", "127.0.0.1"]
                + ["--port", str(port_a), "--database-url", target.convodb_url]
                + ["--log-level", "warning"],
                _child_env(),
                port_a,
                logs,
            ),
            "yardstick": Server(
                "yardstick",
                [sys.executable, "-m", "benchmarks.http_yardstick", "--dialect", dialect]
                + ["--dsn", target.dsn, "--port", str(port_b), "--log-level", "warning"],
                _child_env(CONVODB_BENCH_YARDSTICK_TOKEN=yardstick_token),
                port_b,
                logs,
            ),
        }
        for server in servers.values():
            stack.push_async_callback(server.stop)  # registered first: runs even if start fails
            await server.start()
        await asyncio.gather(*(x.ready() for x in servers.values()))
        log(f"{dialect}: both servers ready in {time.perf_counter() - started:.1f}s")
        tokens = {"convodb": convodb_token, "yardstick": yardstick_token}
        clients = {
            name: await stack.enter_async_context(_client(servers[name].base_url, tokens[name]))
            for name in SERVERS
        }
        yield Setup(servers, clients, work)


PLAN: tuple[tuple[str, int], ...] = (("floor", 0), *WORKLOADS)


def _names(workload: str) -> list[str]:
    return ["yardstick"] if workload == "floor" else list(SERVERS)


async def _dialect(dialect: str, s: HttpSizes) -> dict[str, Any]:
    started = time.perf_counter()
    async with _setup(dialect, s.history) as setup:
        clients, work = setup.clients, setup.work
        for workload, per in PLAN:  # warm-up: pools, prepared statements, first-call imports
            for name in _names(workload):
                make, check = work[name].of(workload, per)
                await drive(clients[name], make, check, s.warmup, s.cap_s)
        rounds: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for workload, per in PLAN:
            names = _names(workload)
            for r in range(s.rounds):
                for name in names if r % 2 == 0 else names[::-1]:  # alternate who goes first
                    make, check = work[name].of(workload, per)
                    tally = await drive(clients[name], make, check, s.requests, s.cap_s)
                    rounds.setdefault(workload, {}).setdefault(name, []).append(tally.result(per))
            log(f"{dialect}: {workload} done")
        out: dict[str, Any] = {name: _median(per_server) for name, per_server in rounds.items()}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _median(per_server: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, rounds in per_server.items():
        summary: dict[str, Any] = {}
        for key in ("rps", "msg_s", "p50_ms", "p99_ms", "requests"):
            values = sorted(r[key] for r in rounds)
            summary[key] = values[len(values) // 2]
        summary["errors"] = sum(r["errors"] for r in rounds)
        summary["rounds"] = rounds
        out[name] = summary
    return out


async def run(quick: bool, dialects: Sequence[str] = ("sqlite", "postgresql")) -> dict[str, Any]:
    """The HTTP table's data for each database in ``dialects`` (those that are reachable)."""
    if not server_available():
        return {"note": "n/a: convodb.server.create_app does not exist (install convodb[server])"}
    s = QUICK if quick else FULL
    out: dict[str, Any] = {"clients": CLIENTS, "workers": 1, "sizes": asdict(s), "results": {}}
    for dialect in dialects:
        if dialect not in DIALECTS:
            log(f"{dialect}: skipped (the HTTP yardstick runs on {', '.join(DIALECTS)} only)")
            continue
        try:
            out["results"][dialect] = await _dialect(dialect, s)
        except Exception as exc:  # one database failing keeps the other's results
            log(f"{dialect}: failed: {type(exc).__name__}: {exc}")
            out["results"][dialect] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


# -- where the server's time goes ------------------------------------------------------------

# (layer, substrings of a sampled stack), most specific first: a sample counts for the first
# layer any frame of its stack matches.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("new database connections", ("connect_utils.py", "_introspect_types", "Record.__connect")),
    ("auth: API key", ("_api_key_identity (",)),
    ("auth: yardstick token compare", ("user (benchmarks/http_yardstick.py",)),
    ("store: append", ("save_conversation_messages (", "append (benchmarks/http_yardstick.py")),
    ("store: agent-input", ("get_agent_input (", "agent_input (benchmarks/http_yardstick.py")),
    ("session end (rollback/close)", ("end_session (",)),
    ("response: validate + JSON", ("serialize_response (", "jsonable_encoder", "render (")),
    ("request: parse + validate", ("solve_dependencies (",)),
    ("other threads (thread pool, aiosqlite)", ("Thread._bootstrap",)),
    # SQLAlchemy runs its sync core in greenlets, which py-spy shows without their caller
    ("SQLAlchemy + driver, caller unseen", ("sqlalchemy/", "asyncpg/", "aiosqlite/")),
    ("FastAPI/Starlette routing, middleware", ("fastapi/", "starlette/")),
    ("uvicorn + h11 (HTTP, socket I/O)", ("uvicorn/", "h11/")),
)


OTHER = "event loop, other"
SPY_RATE = 250


def layer_samples(raw: str) -> dict[str, int]:
    """py-spy's ``--format raw`` samples (``frame;frame;... count``), counted by layer."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        layer = next(
            (n for n, keys in LAYERS if any(k in stack for k in keys)), "event loop, other"
        )
        counts[layer] += int(number)
    return {layer: counts[layer] for layer in (*(n for n, _ in LAYERS), OTHER)}


async def profile(dialect: str, seconds: float) -> str:
    """Sample both servers with py-spy while ``CLIENTS`` clients drive each workload: the
    server's busy CPU time per request, by layer (all threads; samples / rate / requests).
    py-spy needs ptrace rights on the server."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    lines = [
        f"### {dialect}: server CPU ms per request by layer (py-spy, {SPY_RATE} Hz, "
        f"{CLIENTS} clients, {seconds:.0f} s per server and workload)"
    ]
    async with _setup(dialect, 300) as setup:
        with tempfile.TemporaryDirectory(prefix="convodb_bench_spy_") as directory:
            for workload, per in WORKLOADS:
                per_request: dict[str, dict[str, float]] = {}
                rates: dict[str, float] = {}
                for name in SERVERS:
                    make, check = setup.work[name].of(workload, per)
                    await drive(setup.clients[name], make, check, 200, 5.0)  # warm-up
                    proc = setup.servers[name].proc
                    assert proc is not None
                    out = Path(directory) / f"{workload}-{name}.txt"
                    sampler = await asyncio.create_subprocess_exec(
                        spy,
                        *("record", "--pid", str(proc.pid), "--duration", str(int(seconds))),
                        *("--rate", str(SPY_RATE), "--format", "raw", "--nonblocking"),
                        *("-o", str(out)),
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.PIPE,
                    )
                    try:
                        tally = await drive(
                            setup.clients[name], make, check, 1_000_000, seconds + 1
                        )
                        _, err = await asyncio.wait_for(sampler.communicate(), seconds + 30)
                    finally:
                        if sampler.returncode is None:
                            sampler.kill()
                            await sampler.wait()
                    if sampler.returncode != 0 or not out.exists():
                        raise RuntimeError(f"py-spy failed: {err.decode().strip()[-500:]}")
                    rates[name] = tally.result(per)["rps"]
                    served = max(1.0, rates[name] * seconds)  # requests in the sampled window
                    per_request[name] = {
                        layer: count / SPY_RATE / served * 1000
                        for layer, count in layer_samples(out.read_text()).items()
                    }
                lines.append(
                    f"\n{workload}: yardstick {rates['yardstick']:,.0f} req/s, "
                    f"convodb {rates['convodb']:,.0f} req/s (while sampled)"
                )
                lines.append(f"{'layer (ms per request)':44} {'yardstick':>10} {'convodb':>10}")
                for layer in per_request["convodb"]:
                    ys, cv = per_request["yardstick"][layer], per_request["convodb"][layer]
                    if ys >= 0.005 or cv >= 0.005:
                        lines.append(f"{layer:44} {ys:>10.2f} {cv:>10.2f}")
                ys_total = sum(per_request["yardstick"].values())
                cv_total = sum(per_request["convodb"].values())
                lines.append(f"{'total':44} {ys_total:>10.2f} {cv_total:>10.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_bench", description=__doc__)
    parser.add_argument("--db", default="sqlite", help="comma-separated databases")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy both servers: samples by layer"
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="per workload, --profile")
    args = parser.parse_args(argv)
    dialects = args.db.split(",")
    if args.profile:
        for dialect in dialects:
            print(asyncio.run(profile(dialect, args.seconds)))
        return 0
    from .report import render_http

    print(render_http(asyncio.run(run(args.quick, dialects))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
