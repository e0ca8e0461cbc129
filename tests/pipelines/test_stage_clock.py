"""Each DVC stage's wall time is recorded as it runs, and `make demo` / `make ablations` print the ones they ran."""

from __future__ import annotations

import json
import sys
import time

import pytest

from pipelines import stage_clock


@pytest.fixture
def log(tmp_path, monkeypatch):
    path = tmp_path / ".work" / "stage_times.jsonl"
    monkeypatch.setattr(stage_clock, "LOG", path)
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_stage_run_by_dvc_records_its_name_seconds_and_exit_status(log, monkeypatch):
    monkeypatch.setenv(stage_clock.STAGE_ENV, "finetune@swap")
    before = time.time()
    assert stage_clock.timed(lambda: time.sleep(0.2) or 3) == 3
    (row,) = _lines(log)
    assert row["stage"] == "finetune@swap" and row["exit"] == 3
    assert 0.2 <= row["seconds"] < 5 and before - 0.1 <= row["started"] <= time.time()


def test_outside_dvc_nothing_is_recorded(log, monkeypatch):
    monkeypatch.delenv(stage_clock.STAGE_ENV, raising=False)
    assert stage_clock.timed(lambda: 0) == 0
    assert not log.exists()


def test_a_stage_that_raises_is_recorded_as_failed_and_the_error_still_propagates(log, monkeypatch):
    monkeypatch.setenv(stage_clock.STAGE_ENV, "evaluate")

    def broken() -> int:
        raise RuntimeError("boom")

    def usage() -> int:
        raise SystemExit(2)

    with pytest.raises(RuntimeError, match="boom"):
        stage_clock.timed(broken)
    with pytest.raises(SystemExit):
        stage_clock.timed(usage)
    with pytest.raises(SystemExit):
        stage_clock.timed(sys.exit)  # sys.exit() with no code is a success
    assert [r["exit"] for r in _lines(log)] == ["error", 2, 0]


def test_the_summary_lists_the_runs_since_a_time_in_order_with_their_total(log, monkeypatch):
    log.parent.mkdir(parents=True)
    rows = [{"stage": "old", "started": 100.0, "seconds": 9.0, "exit": 0},
            {"stage": "train_generalist", "started": 300.0, "seconds": 500.0, "exit": 0},
            {"stage": "pretrain", "started": 200.0, "seconds": 650.5, "exit": 0},
            {"stage": "evaluate", "started": 400.0, "seconds": 86.0, "exit": 1}]  # fmt: skip
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n{cut short by a kill\n")
    recent = stage_clock.records(since=150.0)
    assert [r["stage"] for r in recent] == ["pretrain", "train_generalist", "evaluate"]
    text = stage_clock.summary(recent)
    assert text.index("pretrain") < text.index("train_generalist") < text.index("evaluate")
    assert "old" not in text and "(exit 1)" in text and "1236.5 s = 20.6 min" in text
    assert "no stage ran" in stage_clock.summary(stage_clock.records(since=1000.0))


def test_every_dvc_stage_script_runs_its_main_through_the_clock():
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[2]
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    scripts = {(s.get("do") or s)["cmd"].split()[1] for s in stages.values()}
    for script in scripts:
        assert "sys.exit(timed(main))" in (repo / script).read_text(), script
