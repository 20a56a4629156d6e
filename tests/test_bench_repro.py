"""`make repro` times each stage of dvc repro (bench/repro.py run) and `make bench` prints each model's share."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "repro.py"

# What dvc repro prints: up-to-date stages, then each stage it runs, its own output in between.
FAKE_DVC = """#!/usr/bin/env bash
echo "Stage 'fetch' didn't change, skipping"
echo "Running stage 'train@mlp':"
echo "> python stages/train.py --model mlp"
sleep 0.6
echo "Running stage 'evaluate@mlp':"
sleep 0.2
echo "Stage 'synth' is cached - skipping run, checking out outputs"
echo "Running stage 'study@capacity':"
sleep 0.3
echo "args: $*"
exit 3
"""


def _repro(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "dvc").write_text(FAKE_DVC)
    (bin_dir / "dvc").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_timed_repro_passes_dvc_through_and_records_each_stage_until_the_next_begins(tmp_path):
    done = _repro(tmp_path, "run", "-f", "train@mlp")
    assert done.returncode == 3, done.stderr  # dvc repro's own exit code
    assert "> python stages/train.py --model mlp\n" in done.stdout and "args: repro -f train@mlp\n" in done.stdout
    record = json.loads((tmp_path / "bench" / "repro_times.json").read_text())
    assert record["command"] == "dvc repro -f train@mlp" and record["exit_code"] == 3
    assert record["skipped"] == ["fetch", "synth"]
    stages = {stage["stage"]: stage["seconds"] for stage in record["stages"]}
    assert list(stages) == ["train@mlp", "evaluate@mlp", "study@capacity"]
    assert stages["train@mlp"] == pytest.approx(0.6, abs=0.25) and stages["evaluate@mlp"] == pytest.approx(0.2, abs=0.2)
    assert stages["study@capacity"] == pytest.approx(0.3, abs=0.25)  # the last stage runs until dvc repro ends
    assert record["wall_s"] >= sum(stages.values()) - 0.15 and "|cpu|threads=" in record["machine"]


def test_the_report_gives_each_models_share_of_the_wall_time_the_largest_first(tmp_path):
    (tmp_path / "bench").mkdir()
    stages = [("fetch", 10), ("train@vit", 500), ("evaluate@vit", 15), ("export@vit", 35), ("train@mlp", 30),
              ("export@mlp", 15), ("study@capacity", 12)]
    (tmp_path / "bench" / "repro_times.json").write_text(json.dumps({
        "command": "dvc repro", "started": "2026-11-30T19:00:00+00:00", "machine": "AMD EPYC|cpu|threads=2",
        "exit_code": 0, "wall_s": 640.0, "skipped": ["synth"],
        "stages": [{"stage": name, "started_s": 0, "seconds": seconds} for name, seconds in stages]}))
    done = _repro(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == ("make repro (dvc repro), 2026-11-30T19:00:00+00:00 on AMD EPYC|cpu|threads=2: 10.7 min wall "
                        "(640 s), exit 0; 7 stages ran, 1 were up to date")
    assert lines[1] == ("by kind of stage: train 8.8 min, export 0.8 min, evaluate 0.2 min, study 0.2 min, "
                        "fetch 0.2 min")
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
    assert rows == ["| vit | 500 | 15 | 35 | 550 | 85.9% |", "| mlp | 30 |  | 15 | 45 | 7.0% |",
                    "| capacity |  |  |  | 12 | 1.9% |", "| fetch |  |  |  | 10 | 1.6% |"]


def test_no_record_is_said_and_a_broken_one_is_a_clear_error(tmp_path):
    done = _repro(tmp_path)
    assert done.returncode == 0 and "no timed pipeline on record yet; `make repro` times one" in done.stdout
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "repro_times.json").write_text('{"stages": [{"stage": "train@mlp"}]}')
    done = _repro(tmp_path)
    assert done.returncode == 1
    assert "bench/repro_times.json: not a record of `bench/repro.py run` (KeyError" in done.stderr
    (tmp_path / "bench" / "repro_times.json").write_text("{")
    done = _repro(tmp_path)
    assert done.returncode == 1 and "bench/repro_times.json: unreadable (" in done.stderr
    done = _repro(tmp_path, "-f")
    assert done.returncode == 1 and "usage: python bench/repro.py [run [dvc repro's arguments]]; not -f" in done.stderr
