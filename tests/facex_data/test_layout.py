"""The on-disk layout and the rules read off it: ledger, held-out split, the person of a clip, the backend."""

from __future__ import annotations

import json

import pytest

from facex_data import layout


def _ledger(folder, clips, backend="offline"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / layout.LEDGER).write_text(json.dumps({"clips": clips, "run": {"extractors": backend}}))
    return folder


def test_holdout_split_is_disjoint_and_stable():
    clips = ["b_0", "a_1", "a_0", "b_1"]
    held = layout.holdout_clips(clips, 2)
    assert held == {"a_1", "b_1"}
    assert layout.holdout_clips(list(reversed(clips)), 2) == held
    assert layout.holdout_clips(clips, 0) == set()
    with pytest.raises(ValueError, match="holdout_every"):
        layout.holdout_clips(clips, 1)


def test_person_is_the_ytb_id_else_the_clip_id_without_its_index():
    assert layout.person_of("abc_3", {"ytb_id": "XyZ"}) == "XyZ"
    assert layout.person_of("facexsample-astronaut_1", {"ytb_id": None}) == "facexsample-astronaut"
    assert layout.person_of("facexsample-grace_hopper_0") == "facexsample-grace_hopper"


def test_the_ledger_names_written_clips_their_shards_and_the_backend(tmp_path):
    clips = [
        {"clip_id": "b_0", "status": "written", "shard": "shard-000001"},
        {"clip_id": "a_0", "status": "written", "shard": "shard-000000"},
        {"clip_id": "c_0", "status": "skipped", "reason": "no face", "shard": "shard-000001"},
    ]
    folder = _ledger(tmp_path / "shards", clips, backend="paper")
    for name in ("shard-000000", "shard-000001"):
        layout.shard_tar(folder, name).write_bytes(b"")
        layout.shard_stats(folder, name).write_text("{}")
    assert layout.written_clips(folder) == ["a_0", "b_0"]
    assert layout.shard_backend(folder) == "paper"
    assert [p.rsplit("/", 1)[1] for p in layout.shards_of_clips(folder, {"b_0"})] == ["shard-000001.tar"]
    assert len(layout.complete_shards(folder)) == 2


def test_a_missing_ledger_or_backend_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the extract stage"):
        layout.written_clips(tmp_path)
    (tmp_path / layout.LEDGER).write_text(json.dumps({"clips": [], "run": {}}))
    with pytest.raises(ValueError, match="records no extractor backend"):
        layout.shard_backend(tmp_path)
    with pytest.raises(ValueError, match="extractors.backend"):
        layout.sample_backend({"clip_id": "x"})
    assert layout.sample_backend({"extractors": {"backend": "offline"}}) == "offline"
