"""The whole pipeline's wall time and each model's share of it (issue 14), as `make bench` prints it.

    python bench/repro.py run [dvc repro's arguments]   # what `make repro` runs: dvc repro, timed stage by stage
    python bench/repro.py                              # the last timed run's table (part of `make bench`)

from the project's root.

`run` passes dvc repro's output through unchanged and notes when each "Running stage" line appears: a stage's time
is from its line to the next one (or to the end), so it holds the stage's process and DVC's own work on its outputs.
The record (RECORD, one per checkout, not versioned) is written when dvc repro ends, also when it fails; dvc repro's
exit code is this script's. A pipeline takes an hour here: `make bench` reports the last one rather than rerun it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from dltorch.io import write_json

RECORD = Path("bench/repro_times.json")
RUNNING = re.compile(r"^Running stage '([^']+)':")
SKIPPED = re.compile(r"^Stage '([^']+)' (?:didn't change|is cached)")  # up to date, or restored from the run cache
KINDS = ("train", "evaluate", "export")  # a model's stages, in the table's columns


def run(dvc_args: list[str], record: Path) -> int:
    """dvc repro with dvc_args, its stdout passed through line by line; the record written at the end."""
    import torch

    from dltorch.precision import machine

    started, clock = datetime.now(UTC), time.monotonic()
    stages: list[dict] = []
    skipped: list[str] = []
    command = ["dvc", "repro", *dvc_args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1) as dvc:
        for line in dvc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if found := RUNNING.match(line):
                stages.append({"stage": found.group(1), "started_s": round(time.monotonic() - clock, 1)})
            elif found := SKIPPED.match(line):
                skipped.append(found.group(1))
    wall = time.monotonic() - clock
    for stage, following in zip(stages, [*stages[1:], {"started_s": wall}], strict=True):
        stage["seconds"] = round(following["started_s"] - stage["started_s"], 1)
    write_json(record, {"command": " ".join(command), "started": started.isoformat(timespec="seconds"),
                        "machine": machine(torch.device("cpu")), "exit_code": dvc.returncode,
                        "wall_s": round(wall, 1), "stages": stages, "skipped": skipped})
    return dvc.returncode


def load(record: Path) -> dict | None:
    """The last timed run, or None when none is on record."""
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{record}: unreadable ({exc}); delete it and run `make repro` again") from None


def shares(stages: list[dict]) -> dict[str, dict[str, float]]:
    """Seconds per model (or study, or data stage) and kind of stage, and their total: train@mlp is mlp's train."""
    table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for stage in stages:
        kind, _, name = stage["stage"].partition("@")
        table[name or kind][kind] += stage["seconds"]
    return {name: {**row, "total": sum(row.values())} for name, row in table.items()}


def report(data: dict) -> str:
    """The run's headline, the seconds of each kind of stage, and each model's share, the largest first."""
    wall = data["wall_s"]
    status = "exit 0" if data["exit_code"] == 0 else f"FAILED, exit {data['exit_code']}"
    lines = [f"make repro ({data['command']}), {data['started']} on {data['machine']}: "
             f"{wall / 60:.1f} min wall ({wall:.0f} s), {status}; {len(data['stages'])} stages ran, "
             f"{len(data['skipped'])} were up to date"]
    table = shares(data["stages"])
    by_kind: dict[str, float] = defaultdict(float)
    for row in table.values():
        for kind in row.keys() - {"total"}:
            by_kind[kind] += row[kind]
    lines.append("by kind of stage: " + ", ".join(f"{kind} {seconds / 60:.1f} min" for kind, seconds in
                                                   sorted(by_kind.items(), key=lambda item: -item[1])))
    lines += ["", "| model or study | " + " | ".join(KINDS) + " | total s | share of wall |",
              "|---" * (len(KINDS) + 3) + "|"]
    for name, row in sorted(table.items(), key=lambda item: -item[1]["total"]):
        cells = " | ".join(f"{row[kind]:.0f}" if kind in row else "" for kind in KINDS)
        lines.append(f"| {name} | {cells} | {row['total']:.0f} | {row['total'] / wall:.1%} |")
    return "\n".join(lines)


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["run"]:
        sys.exit(run(argv[1:], RECORD))
    if argv:
        sys.exit(f"usage: python bench/repro.py [run [dvc repro's arguments]]; not {' '.join(argv)}")
    data = load(RECORD)
    if data is None:
        print(f"{RECORD}: no timed pipeline on record yet; `make repro` times one")
        return
    try:
        print(report(data))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        sys.exit(f"{RECORD}: not a record of `bench/repro.py run` ({type(exc).__name__}: {exc}); delete it and run "
                 "`make repro` again")


if __name__ == "__main__":
    main()
