"""The printed table: medians per store, ratios against ``raw``, and convodb's targets."""

from __future__ import annotations

import math
from typing import Any

# (workload, metric, higher is better, convodb's target as a ratio to raw, or None): the
# performance issue's targets (#14)
ROWS: tuple[tuple[str, str, bool, float | None], ...] = (
    ("append_single", "msg_s", True, 0.85),
    ("append_single", "p50_ms", False, None),
    ("append_single", "p99_ms", False, None),
    ("append_batch10", "msg_s", True, 0.85),
    ("append_batch10", "p50_ms", False, None),
    ("latest50_random", "p50_ms", False, 1.5),
    ("latest50_random", "p99_ms", False, None),
    ("latest50_20k", "p50_ms", False, 1.5),
    ("latest50_20k", "p99_ms", False, None),
    ("latest50_100k", "p50_ms", False, 1.5),
    ("token_window", "p50_ms", False, None),
    ("concurrent20", "msg_s", True, 1.0),
)
YARDSTICKS = ("raw", "limit", "convodb")
"""The columns before the peers'; ``limit`` (a read of ``role, content`` without the
ownership check) stands beside ``raw``, with its ratio to it."""
LIMIT_ROWS = ("latest50_random", "latest50_20k", "latest50_100k")
ANOMALIES = ("lost", "duplicated", "misordered", "inserted_behind", "errors")
MEMORY_SLACK_MB = 8
"""RSS growth after warm-up that still counts as flat: allocator noise, not a leak."""


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def _ratio(value: Any, base: Any) -> str:
    try:
        r = value / base
    except (TypeError, ZeroDivisionError):
        return ""
    return "" if math.isnan(r) else f"{r:.2f}x"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(widths[i]) for i, h in enumerate(headers))
    out = [line, "  ".join("-" * x for x in widths)]
    out += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)) for r in rows]
    return "\n".join(out)


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    runs = meta.get("runs")
    parts = [
        f"convodb benchmarks ({meta['mode']} run, {meta['date']}, {meta['cpu']}, "
        f"{meta['cores']} cores, Python {meta['python']}, {meta.get('seconds', '?')} s)",
        "value (ratio to raw); msg/s: higher is better, ms: lower is better; "
        "medians of rounds interleaved across stores; limit: latest-50 of role, content "
        "without the ownership check",
    ]
    if runs:
        parts.insert(
            1,
            f"median of {len(runs)} runs: "
            + ", ".join(f"{r['date']} ({r['seconds']} s)" for r in runs),
        )
    for dialect, data in results["results"].items():
        if "skipped" in data:
            parts.append(f"\n## {dialect}: skipped: {data['skipped']}")
            continue
        stores: list[str] = []
        for workload in data.values():
            for name in workload:
                if (
                    name not in stores
                    and isinstance(workload[name], dict)
                    and name not in YARDSTICKS
                    and "total_messages" not in workload[name]
                ):
                    stores.append(name)
        peers = [x for x in stores if x not in ("small", "main", "large")]
        headers = ["workload", "metric", "raw", "convodb", "target", "ok", *peers]
        rows: list[list[str]] = []
        limit_cells: list[str] = []  # the ``limit`` column, inserted before raw at the end
        misses: list[str] = []

        def add(
            row: list[str], limit_cell: str = "", rows: Any = rows, cells: Any = limit_cells
        ) -> None:
            rows.append(row)
            cells.append(limit_cell)

        for workload, metric, higher, target in ROWS:
            per = data.get(workload, {})
            raw = per.get("raw", {}).get(metric)
            conv = per.get("convodb", {}).get(metric)
            ok = ""
            target_text = ""
            if target is not None and raw is not None and conv is not None:
                r = conv / raw
                target_text = f"{'>=' if higher else '<='}{target}x"
                good = r >= target if higher else r <= target
                ok = "yes" if good else "MISS"
                if not good:
                    misses.append(f"{workload} {metric} {r:.2f}x (target {target_text})")
            row = [
                workload,
                metric.replace("_", " "),
                _fmt(raw),
                f"{_fmt(conv)} ({_ratio(conv, raw)})",
                target_text,
                ok,
            ]
            for p in peers:
                v = per.get(p, {}).get(metric)
                row.append(f"{_fmt(v)} ({_ratio(v, raw)})" if v is not None else "-")
                if (
                    workload in LIMIT_ROWS
                    and metric == "p50_ms"
                    and not p.endswith("(per request)")
                    and v is not None
                    and conv is not None
                    and conv > v
                ):  # latest-50: at or below every peer in its best usage
                    misses.append(f"{workload} {metric} above {p} ({_fmt(conv)} > {_fmt(v)} ms)")
            limit = per.get("limit", {}).get(metric)
            add(row, f"{_fmt(limit)} ({_ratio(limit, raw)})" if limit is not None else "-")
        # token window against the same store's latest-50 on the same conversation
        window = data.get("token_window", {})
        base = data.get("latest50_100k", {})
        for name in ("raw", "convodb"):
            wv, lv = window.get(name, {}).get("p50_ms"), base.get(name, {}).get("p50_ms")
            if name == "convodb":
                if wv is None:
                    misses.append("token_window: ConversationService.get_agent_input is missing")
                elif lv and wv / lv > 2:
                    misses.append(f"token_window {wv / lv:.2f}x latest-50 (target <=2x)")
        add(
            [
                "token_window",
                "/ latest50 100k",
                _ratio(window.get("raw", {}).get("p50_ms"), base.get("raw", {}).get("p50_ms"))
                or "n/a",
                _ratio(
                    window.get("convodb", {}).get("p50_ms"), base.get("convodb", {}).get("p50_ms")
                )
                or "n/a",
                "<=2x",
                "",
            ]
            + ["n/a"] * len(peers),
            "n/a",
        )
        concurrent = data.get("concurrent20", {})
        row = ["concurrent20", "lost/dup/misord/behind/err"]
        for name in ["raw", "convodb", "", "", *peers]:
            if not name:
                row.append("0/0/0/0/0" if not row[-1].startswith("0/") or True else "")
                continue
            r = concurrent.get(name, {})
            row.append("/".join(str(r.get(k, "?")) for k in ANOMALIES) if r else "-")
        row[4], row[5] = "0 anomalies", ""
        conv_anomalies = [concurrent.get("convodb", {}).get(k, 0) for k in ANOMALIES[:4]]
        row[5] = "yes" if not any(conv_anomalies) else "MISS"
        if any(conv_anomalies):
            misses.append("concurrent20 anomalies")
        add(row, "-")
        growth = data.get("growth", {})
        for name in ("raw", "convodb"):
            small = growth.get("small", {}).get(name, {}).get("p50_ms")
            cells = []
            for size in ("small", "main", "large"):
                g = growth.get(size, {})
                if name in g:
                    cells.append(
                        f"{g['total_messages']:,}: {_fmt(g[name]['p50_ms'])} ms "
                        f"({_ratio(g[name]['p50_ms'], small)})"
                    )
            add(
                [
                    "growth " + name,
                    "latest50 p50 by table size",
                    "; ".join(cells),
                    "",
                    "",
                    "",
                    *[""] * len(peers),
                ]
            )
            largest = next((growth[z] for z in ("large", "main") if z in growth), None)
            if name == "convodb" and largest and small:
                ratio = largest[name]["p50_ms"] / small
                if ratio > 1.2:
                    misses.append(
                        f"growth: latest-50 p50 {ratio:.2f}x at "
                        f"{largest['total_messages']:,} vs {growth['small']['total_messages']:,}"
                    )
        memory = data.get("memory", {}).get("convodb")
        if memory:
            flat = memory["growth_after_warmup_mb"] <= max(
                MEMORY_SLACK_MB, 0.03 * memory["rss_warm_mb"]
            )
            add(
                [
                    "memory convodb",
                    "RSS after warm-up",
                    "",
                    f"{memory['rss_warm_mb']:.0f} -> {memory['rss_end_mb']:.0f} MB over "
                    f"{memory['messages']:,} msgs",
                    f"flat (<= {MEMORY_SLACK_MB} MB or 3%)",
                    "yes" if flat else "MISS",
                    *[""] * len(peers),
                ]
            )
            if not flat:
                misses.append(
                    f"memory: RSS grew {memory['growth_after_warmup_mb']:.0f} MB after warm-up"
                )
        if any(isinstance(w, dict) and "limit" in w for w in data.values()):
            headers.insert(2, "limit")
            for row, cell in zip(rows, limit_cells, strict=True):
                row.insert(2, cell)
        parts.append(f"\n## {dialect}\n" + _table(headers, rows))
        parts.append("convodb misses: " + ("; ".join(misses) if misses else "none"))
        to_limit = [
            f"{workload} {r}"
            for workload in LIMIT_ROWS
            if (
                r := _ratio(
                    data.get(workload, {}).get("convodb", {}).get("p50_ms"),
                    data.get(workload, {}).get("limit", {}).get("p50_ms"),
                )
            )
        ]
        if to_limit:
            parts.append("convodb / limit, p50: " + ", ".join(to_limit))
    http = results.get("http")
    if http:
        parts.append(render_http(http))
    return "\n".join(parts)


HTTP_TARGET = 0.8
"""convodb serve's requests/s as a ratio to the minimal FastAPI + raw-driver endpoint."""
HTTP_ROWS: tuple[tuple[str, str], ...] = (
    ("append_1", "append 1 msg"),
    ("append_10", "append 10 msgs"),
    ("agent_input_50", "agent-input 50"),
)


def render_http(http: dict[str, Any]) -> str:
    """The ``## HTTP`` table: convodb serve against the yardstick, per database."""
    if "note" in http:
        return f"\n## HTTP\n{http['note']}"
    sizes = http["sizes"]
    head = (
        f"\n## HTTP\nconvodb serve vs a minimal FastAPI + raw-driver endpoint (yardstick), "
        f"uvicorn 1 worker each on 127.0.0.1, {http['clients']} concurrent aiohttp clients in "
        f"the benchmark process; medians of {sizes['rounds']} rounds of <= "
        f"{sizes['requests']} requests / {sizes['cap_s']} s; agent-input on "
        f"{sizes['history']}-message conversations"
    )
    headers = ["db", "workload", "yardstick rps", "convodb rps", "target", "ok"]
    headers += ["yardstick p50/p99 ms", "convodb p50/p99 ms", "errors"]
    rows: list[list[str]] = []
    misses: list[str] = []
    for dialect, data in http["results"].items():
        if "error" in data:
            rows.append([dialect, "failed: " + data["error"], "", "", "", "", "", "", ""])
            misses.append(f"{dialect}: failed")
            continue
        for workload, label in HTTP_ROWS:
            ys = data.get(workload, {}).get("yardstick", {})
            cv = data.get(workload, {}).get("convodb", {})
            ratio = cv["rps"] / ys["rps"] if ys.get("rps") and cv.get("rps") else math.nan
            good = ratio >= HTTP_TARGET
            if not good:
                misses.append(f"{dialect} {label} {ratio:.2f}x (target >={HTTP_TARGET}x)")
            rows.append(
                [
                    dialect,
                    label,
                    _fmt(ys.get("rps")),
                    f"{_fmt(cv.get('rps'))} ({_ratio(cv.get('rps'), ys.get('rps'))})",
                    f">={HTTP_TARGET}x",
                    "yes" if good else "MISS",
                    f"{_fmt(ys.get('p50_ms'))} / {_fmt(ys.get('p99_ms'))}",
                    f"{_fmt(cv.get('p50_ms'))} / {_fmt(cv.get('p99_ms'))} "
                    f"({_ratio(cv.get('p99_ms'), ys.get('p99_ms'))} p99)",
                    f"{ys.get('errors', '?')}/{cv.get('errors', '?')}",
                ]
            )
        floor = data.get("floor", {}).get("yardstick", {})
        if floor:
            rows.append(
                [
                    dialect,
                    "floor: GET /healthz",
                    _fmt(floor.get("rps")),
                    "(no database)",
                    "",
                    "",
                    f"{_fmt(floor.get('p50_ms'))} / {_fmt(floor.get('p99_ms'))}",
                    "",
                    f"{floor.get('errors', '?')}/-",
                ]
            )
    return "\n".join(
        [
            head,
            _table(headers, rows),
            "errors: yardstick/convodb, failed or wrong responses (all rounds); "
            "floor: uvicorn + FastAPI + this client, no database",
            "convodb HTTP misses: " + ("; ".join(misses) if misses else "none"),
        ]
    )
