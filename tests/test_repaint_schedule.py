"""RePaint's jump schedule (strbench/resampling.py): a pure list of levels with closed-form counts."""
import numpy as np
import pytest

from strbench.resampling import check_schedule, jump_schedule, schedule_counts

PARAMS = [(100, 10, 10), (100, 5, 3), (50, 10, 1), (20, 3, 4), (7, 2, 3), (10, 10, 5), (10, 20, 5),
          (1, 1, 1), (400, 10, 10), (33, 4, 2)]


def _reference_repaint(T, jump_length, jump_n_sample):
    """RePaint's get_schedule_jump (n_sample = 1, no jump2/jump3) in its own 0-based indices, ending at -1."""
    jumps = {}
    for j in range(0, T - jump_length, jump_length):
        jumps[j] = jump_n_sample - 1
    t = T
    ts = []
    while t >= 1:
        t = t - 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] = jumps[t] - 1
            for _ in range(jump_length):
                t = t + 1
                ts.append(t)
    ts.append(-1)
    return ts


@pytest.mark.parametrize("T,L,n", PARAMS)
def test_schedule_shape(T, L, n):
    s = jump_schedule(T, L, n)
    assert s[0] == T and s[-1] == 0
    d = np.diff(s)
    assert set(np.abs(d).tolist()) == {1}
    assert min(s) == 0 and max(s) <= T


@pytest.mark.parametrize("T,L,n", PARAMS)
def test_counts_closed_form(T, L, n):
    s = jump_schedule(T, L, n)
    d = np.diff(s)
    n_jumps = max(0, -(-(T - L) // L))  # ceil((T - L) / L) jump points when T > L
    assert int((d > 0).sum()) == L * (n - 1) * n_jumps == schedule_counts(T, L, n)["undo"]
    assert int((d < 0).sum()) == T + L * (n - 1) * n_jumps == schedule_counts(T, L, n)["reverse"]


@pytest.mark.parametrize("T,L,n", PARAMS)
def test_matches_repaint_indices(T, L, n):
    """Level = RePaint's index + 1 (its first model step T-1 is level T, its final -1 the clean level 0)."""
    assert jump_schedule(T, L, n) == [i + 1 for i in _reference_repaint(T, L, n)]


def test_default_paper_counts():
    c = schedule_counts(100)
    assert c == {"reverse": 910, "undo": 810}


def test_no_resampling_is_plain():
    assert jump_schedule(6, 2, 1) == [6, 5, 4, 3, 2, 1, 0]


def test_jump_every_jump_length():
    # T=7, L=2: jump points at RePaint indices 0, 2, 4 -> levels 1, 3, 5; each revisited n-1 times
    s = jump_schedule(7, 2, 2)
    assert s == [7, 6, 5, 6, 7, 6, 5, 4, 3, 4, 5, 4, 3, 2, 1, 2, 3, 2, 1, 0]


@pytest.mark.parametrize("bad", [(0, 10, 10), (10, 0, 10), (10, 10, 0), (10, 2.0, 3), (10, True, 3)])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        jump_schedule(*bad)


@pytest.mark.parametrize("levels", [[5, 4, 2, 1, 0], [5, 4, 3, 2, 1], [4, 3, 2, 1, 0], [5, 6, 5, 4, 3, 2, 1, 0],
                                    [5, 4, 3, 2, 1, 0, -1, 0]])
def test_check_schedule_rejects(levels):
    with pytest.raises(ValueError):
        check_schedule(levels, 5)
