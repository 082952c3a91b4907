"""Helpers of scripts/bench-peers.sh (standard library only, run with the machine's python3).

- `database-url ADMIN_URL NAME`: the URL of database NAME on the server of ADMIN_URL; refuses a server
  that is not on this machine (loopback or Unix socket), as `cortex bench` does, since the script
  creates and drops databases there and loads the server.
- `summarize DIR [--json]`: reads the run reports DIR/r<round>.<system>.json (the JSON of
  `cortex bench queue --json` or of a peer driver; a run that failed has no file) and DIR/meta.json,
  and prints one table, figure × system, min / median / max over the rounds (or the same as JSON).
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# Figures in the order and wording of `cortex bench queue`.
FIGURES = (
    ("enqueue_jobs_per_second", "bulk enqueue (500 per call), jobs/s"),
    ("process_concurrency_1_jobs_per_second", "process, concurrency 1, jobs/s"),
    ("process_concurrency_16_jobs_per_second", "process, concurrency 16, jobs/s"),
    ("process_concurrency_64_jobs_per_second", "process, concurrency 64, jobs/s"),
    ("latency_p50_ms", "enqueue→start p50, ms (lower is better)"),
    ("latency_p99_ms", "enqueue→start p99, ms (lower is better)"),
)


def database_url(admin_url: str, name: str) -> str:
    parts = urlsplit(admin_url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"--database-url must be a postgres:// URL, not {admin_url!r}")
    host = parts.hostname or ""
    if not (host == "" or host.startswith("/") or host == "localhost" or _is_loopback(host)):
        raise SystemExit(
            f"--database-url must point at a PostgreSQL server on this machine, not {host}: "
            "the benchmark creates and drops databases there and loads the server"
        )
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _format(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


def summarize(directory: Path) -> dict[str, object]:
    meta = json.loads((directory / "meta.json").read_text())
    systems: list[dict[str, object]] = []
    figures: list[dict[str, object]] = []
    for system in meta["systems"]:
        reports = []
        for round_ in range(1, meta["rounds"] + 1):
            path = directory / f"r{round_}.{system}.json"
            if path.exists():
                reports.append(json.loads(path.read_text()))
        version = next((r["version"] for r in reports if r.get("version")), meta["versions"].get(system, "?"))
        systems.append(
            {
                "system": system,
                "version": version,
                "runtime": next((r.get("runtime") for r in reports if r.get("runtime")), None),
                "settings": next((r.get("settings") for r in reports if r.get("settings")), None),
                "runs_completed": len(reports),
                "runs_failed": meta["rounds"] - len(reports),
            }
        )
        for name, label in FIGURES:
            values = [f["value"] for r in reports for f in r["figures"] if f["name"] == name]
            entry: dict[str, object] = {"name": name, "label": label, "system": system, "n": len(values)}
            if values:
                entry.update(min=min(values), median=statistics.median(values), max=max(values), values=values)
            figures.append(entry)
    return {**meta, "systems_run": meta["systems"], "systems": systems, "figures": figures}


def print_table(summary: dict[str, object]) -> None:
    load = summary["load_average"]
    print(
        f"Side by side, `cortex bench queue` and its peers: {summary['jobs']} jobs per measurement, "
        f"{summary['rounds']} round(s) alternating the systems, PostgreSQL {summary['postgres']}, "
        f"{summary['cores']} cores, load average {load['start']} at start and {load['end']} at end "
        f"(1/5/15 min). Each cell: min / median / max (n runs)."
    )
    print()
    systems = summary["systems"]
    heads = []
    for s in systems:
        head = f"{s['system']} {s['version']}"
        if s["runs_failed"]:
            head += f" ({s['runs_failed']} run(s) failed)"
        heads.append(head)
    print("| Figure | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(systems))
    for name, label in FIGURES:
        cells = []
        for s in systems:
            entry = next(f for f in summary["figures"] if f["name"] == name and f["system"] == s["system"])
            if entry["n"]:
                cells.append(
                    f"{_format(entry['min'])} / {_format(entry['median'])} / {_format(entry['max'])} (n={entry['n']})"
                )
            else:
                cells.append("—")
        print(f"| {label} | " + " | ".join(cells) + " |")
    if "cortex" in summary["systems_run"]:
        print()
        print(f"cortex binary: {summary['cortex']}")


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "database-url":
        print(database_url(argv[1], argv[2]))
    elif len(argv) in (2, 3) and argv[0] == "summarize" and argv[2:] in ([], ["--json"]):
        summary = summarize(Path(argv[1]))
        if argv[2:]:
            print(json.dumps(summary, indent=2, ensure_ascii=False))
        else:
            print_table(summary)
    else:
        raise SystemExit("usage: report.py database-url ADMIN_URL NAME | report.py summarize DIR [--json]")


if __name__ == "__main__":
    main(sys.argv[1:])
