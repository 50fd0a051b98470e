"""Recoverable checkpoints: a truncated/corrupt checkpoint is moved aside to `.corrupt` with one warning line,
and loading falls back to the previous good checkpoint (kept by save_checkpoint) or to None (start again)."""
import logging

import pytest
import torch

from strbench import checkpoint as C
from strbench.errors import CheckpointError


def _state(step, h="h1"):
    return {"format": C.FORMAT, "strbench_version": "0", "role": "irsde", "config": "{}", "config_hash": h,
            "step": step, "model": {"w": torch.full((64, 64), float(step))}, "ema": None, "optimizer": {},
            "rng": {"cpu": torch.zeros(4, dtype=torch.uint8)}}


def _save_steps(path, steps, keep_previous=True):
    for s in steps:
        C.save_checkpoint(path, _state(s), keep_previous=keep_previous)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "strbench.checkpoint" and r.levelno == logging.WARNING]


def test_previous_checkpoint_is_kept_on_save(tmp_path):
    p = tmp_path / "model.pt"
    _save_steps(p, [2, 4, 6])
    assert C.load_checkpoint(p)["step"] == 6 and C.load_checkpoint(C.previous_path(p))["step"] == 4
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.prev.pt", "model.pt"]  # no temp files
    q = tmp_path / "plain.pt"
    _save_steps(q, [1, 2], keep_previous=False)  # the default: one file, as before
    assert not C.previous_path(q).exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "foreign"])
def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    p = tmp_path / "model.pt"
    _save_steps(p, [2, 4])
    data = p.read_bytes()
    if damage == "truncate":
        p.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        p.write_bytes(data[:100] + b"\x00" * (len(data) - 100))
    elif damage == "empty":
        p.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(2)}, p)
    with caplog.at_level(logging.WARNING, logger="strbench.checkpoint"):
        state = C.load_resumable(p, expected_hash="h1")
    assert state is not None and state["step"] == 2 and torch.equal(state["model"]["w"], torch.full((64, 64), 2.0))
    assert not p.exists() and C.corrupt_path(p).is_file() and C.previous_path(p).is_file()
    msgs = _warnings(caplog)
    assert len(msgs) == 1 and "\n" not in msgs[0]
    assert str(p) in msgs[0] and "model.pt.corrupt" in msgs[0] and "resuming from model.prev.pt (step 2)" in msgs[0]
    # training continues from step 2 and saves: the quarantined file is not rotated into .prev
    C.save_checkpoint(p, _state(3), keep_previous=True)
    assert C.load_resumable(p, "h1")["step"] == 3 and C.load_checkpoint(C.previous_path(p))["step"] == 2


def test_no_good_checkpoint_means_start_again(tmp_path, caplog):
    p = tmp_path / "model.pt"
    assert C.load_resumable(p) is None  # nothing there: no warning
    _save_steps(p, [2])  # only one checkpoint: no previous
    p.write_bytes(p.read_bytes()[:-200])
    with caplog.at_level(logging.WARNING, logger="strbench.checkpoint"):
        assert C.load_resumable(p) is None
    msgs = _warnings(caplog)
    assert len(msgs) == 1 and msgs[0].endswith("training starts again")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.pt.corrupt"]
    _save_steps(p, [2, 4])  # both damaged: two lines, then None
    for f in (p, C.previous_path(p)):
        f.write_bytes(b"junk")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="strbench.checkpoint"):
        assert C.load_resumable(p) is None
    assert len(_warnings(caplog)) == 2
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.prev.pt.corrupt", "model.pt.corrupt"]


def test_other_config_is_refused_not_quarantined(tmp_path):
    p = tmp_path / "model.pt"
    _save_steps(p, [2, 4])
    with pytest.raises(CheckpointError, match="config hash") as e:
        C.load_resumable(p, expected_hash="other")
    assert not isinstance(e.value, C.CheckpointUnreadable) and "\n" not in str(e.value)
    assert p.is_file() and not C.corrupt_path(p).exists()


class _Foreign:
    pass


def test_unreadable_message_is_one_line(tmp_path):
    """torch's weights_only refusal spans several lines; the CheckpointError is one."""
    p = tmp_path / "model.pt"
    torch.save({**_state(1), "extra": _Foreign()}, p)
    try:
        torch.load(p, weights_only=True)
    except Exception as raw:  # noqa: BLE001
        assert "\n" in str(raw)
    with pytest.raises(C.CheckpointUnreadable) as e:
        C.load_checkpoint(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value) and "Unpickling" in str(e.value)
