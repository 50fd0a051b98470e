"""Claims: several processes (on one machine or many) share one experiment's cells, none runs a cell twice.

    board = Board.for_store(exp.cache_dir, exp.tracking.uri, exp.experiment_name)
    for cell in free_first(todo, board, busy=res.model_busy, ready=res.model_ready):
        turn = claim_cell(board, tracker, cell.hash, cell.label, since=t_start)  # just before running it
        if turn.claim is None:
            ...                                                  # skipped: turn.why says who has it
        else:
            with turn.claim:                                     # heartbeat thread; released at the end
                run the cell, logging through turn.claim.watch(tracker)

Design. A claim is a small JSON file per cell, ``<cache>/claims/<store key>/<cell hash>.json`` (the store
key names the tracking store and MLflow experiment), holding a random token, the holder's description,
the run id of the cell's MLflow run and a heartbeat time that a thread of the holder rewrites every few
seconds (``STRBENCH_HEARTBEAT``, default 5 s). A claim whose heartbeat is older than the grace period
(``STRBENCH_CLAIM_GRACE``, default 60 s) belongs to a holder that stopped (killed, out of memory, machine
gone): the next process takes it over and marks the holder's RUNNING run FAILED. Reading, writing, taking
over and releasing a claim happen under one short file lock per folder (``filelock``: held for
milliseconds), so of two processes reaching a free cell together exactly one wins it. A holder whose claim
was taken over meanwhile (its heartbeat stopped for longer than the grace period, e.g. a suspended
process) notices at its next beat and ends its run FAILED, never FINISHED.

Why files in the cache folder rather than MLflow tags: MLflow offers no compare-and-set, so two processes
that both find "no RUNNING run of this cell" would both start one; a lock held for a few milliseconds
makes claim-or-skip atomic. And the cache folder is already what several machines must share (the
trained models live there, trained under ``models/<hash>/train.lock``; README's scale-out recipe: a
shared cache folder and an MLflow tracking server on PostgreSQL), so one design serves one process,
several processes on one machine and several machines, with sqlite or a server alike.
Why a heartbeat rather than a pid, a host name, or an OS lock held for the whole cell: a pid means
nothing on another machine, and an OS lock of a vanished machine on a network filesystem may stay held
(NFSv3 lock recovery waits for that client to come back); a heartbeat expires on its own wherever its
holder was. The heartbeat is also written to the cell's MLflow run (tag ``strbench.heartbeat``, ms), so
tracking can tell a live RUNNING run from a stale one by itself (:meth:`strbench.tracking.Tracker.
fail_stale_runs`); a RUNNING run claimed through this very folder that no claim holds any more is an orphan (its
process could not close it, e.g. the tracking server was down) and is failed at once, whatever its heartbeat.
Processes with separate claims folders on one MLflow experiment could both start a cell (MLflow's check for a
FINISHED or RUNNING run is check-then-create), so the experiment records the id of the one folder its processes
share (tag ``strbench.claims_board``, set atomically when the experiment is created) and a process with another
folder is refused in one line (``claims.take_over`` moves the experiment to a new folder).
Heartbeats are wall-clock times compared across machines: keep their clocks within a few seconds (NTP);
the grace period is an order of magnitude longer. Every machine must name the tracking store by the same
URI (the store key is a hash of it).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from strbench import atomic
from strbench.errors import ConfigError, StrbenchError

GRACE_ENV, HEARTBEAT_ENV = "STRBENCH_CLAIM_GRACE", "STRBENCH_HEARTBEAT"
DEFAULT_GRACE_S, DEFAULT_HEARTBEAT_S = 60.0, 5.0
LOCK_TIMEOUT_S = 120.0  # the folder lock is held for milliseconds; this long means a broken filesystem


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name}={raw!r}: expected a positive number of seconds; unset it for the default "
                          f"({default:g} s)")
    return value


def settings(grace: Optional[float] = None, heartbeat: Optional[float] = None) -> tuple[float, float]:
    """(grace, heartbeat) in seconds: the arguments, else the environment, else 60 s and min(5 s, grace / 4).
    The heartbeat must be at most a third of the grace, so one late beat never loses a claim."""
    g = _env_seconds(GRACE_ENV, DEFAULT_GRACE_S) if grace is None else float(grace)
    b = _env_seconds(HEARTBEAT_ENV, min(DEFAULT_HEARTBEAT_S, g / 4)) if heartbeat is None else float(heartbeat)
    if not (g > 0 and 0 < b <= g / 3):
        raise ConfigError(f"claims.heartbeat_s (or {HEARTBEAT_ENV}) {b:g} s with claims.grace_s (or {GRACE_ENV}) "
                          f"{g:g} s: the heartbeat must be positive and at most a third of the grace period; lower "
                          "the heartbeat or raise the grace")
    return g, b


def store_key(uri: str, experiment: str) -> str:
    """16 hex characters naming (tracking store, MLflow experiment); local store paths are made absolute."""
    from strbench.tracking import sqlite_path

    p = sqlite_path(uri)
    if p is not None:
        canon = "sqlite:///" + str(p.expanduser().resolve())
    elif uri.startswith("file:") or "://" not in uri:
        canon = "file://" + str(Path(uri.removeprefix("file://").removeprefix("file:")).expanduser().resolve())
    else:
        canon = uri.rstrip("/")
    return hashlib.sha256(json.dumps([canon, experiment]).encode()).hexdigest()[:16]


def _now_ms() -> str:
    return str(int(time.time() * 1000))


@dataclass(frozen=True)
class Holder:
    """What a claim file says: who holds the cell, since when it last gave a sign of life, its run."""

    token: str
    cell: str
    label: str = ""
    holder: str = "?"  # "host pid N": for people reading messages only, never used to decide anything
    heartbeat: float = 0.0  # time.time() of the last beat
    run_id: str = ""

    def age(self, now: Optional[float] = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat


class Board:
    """The claim files of one tracking store + MLflow experiment, in a folder every process shares."""

    def __init__(self, folder: str | os.PathLike, *, grace: Optional[float] = None,
                 heartbeat: Optional[float] = None):
        self.folder = Path(folder)
        self.grace, self.heartbeat = settings(grace, heartbeat)
        self._lock_path = self.folder / ".lock"

    @classmethod
    def for_store(cls, cache_dir: str | os.PathLike, uri: str, experiment: str, **kw) -> "Board":
        return cls(Path(cache_dir) / "claims" / store_key(uri, experiment), **kw)

    @property
    def store_lock(self) -> Path:
        """A lock file for creating the store's parent run when the store has no local file to lock beside."""
        return self.folder / "store.lock"

    def path(self, cell_hash: str) -> Path:
        return self.folder / f"{cell_hash}.json"

    @property
    def id(self) -> str:
        """This claims folder's identity, made once (random, kept in the folder): cell runs claimed through it
        carry it, and the MLflow experiment records the one folder its processes share (every machine sees
        the same id in a shared folder, whatever path it is mounted at)."""
        p = self.folder / "board.id"
        with contextlib.suppress(FileNotFoundError):
            return p.read_text().strip()
        with self._locked():
            if not p.is_file():
                atomic.write_text(p, uuid.uuid4().hex)
            return p.read_text().strip()

    @contextlib.contextmanager
    def _locked(self):
        from filelock import FileLock, Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self._lock_path))
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout:
            raise StrbenchError(f"claims: {self._lock_path} stayed locked for {LOCK_TIMEOUT_S:g} s; the cache "
                                "folder's filesystem may not support file locks (use a local disk or NFS with "
                                "locking)") from None
        try:
            yield
        finally:
            lock.release()

    def read(self, cell_hash: str) -> Optional[Holder]:
        """The claim on a cell, None when unclaimed (an unreadable file reads as a long-dead claim)."""
        try:
            d = json.loads(self.path(cell_hash).read_text())
            return Holder(**{k: d[k] for k in Holder.__dataclass_fields__ if k in d})
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError, OSError):
            return Holder(token="", cell=cell_hash, holder="an unreadable claim file")

    def _write(self, h: Holder) -> None:
        atomic.write_text(self.path(h.cell), json.dumps(h.__dict__, sort_keys=True))

    def claim(self, cell_hash: str, label: str = "") -> tuple[Optional["Claim"], Optional[Holder]]:
        """(Claim, the stale claim it took over or None) when the cell is free or its holder's heartbeat is
        older than the grace period; (None, the live holder) when someone else has it."""
        with self._locked():
            cur = self.read(cell_hash)
            if cur is not None and cur.age() <= self.grace:
                return None, cur
            mine = Holder(token=uuid.uuid4().hex, cell=cell_hash, label=label,
                          holder=f"{socket.gethostname()} pid {os.getpid()}", heartbeat=time.time())
            self._write(mine)
        return Claim(self, mine, previous=cur), cur

    def _update(self, claim: "Claim", **changes) -> bool:
        """Rewrite the claim (a new heartbeat, a run id) if it is still ours; False when it was taken over."""
        with self._locked():
            cur = self.read(claim.cell)
            if cur is None or cur.token != claim.token:
                return False
            self._write(Holder(**{**cur.__dict__, "heartbeat": time.time(), **changes}))
            return True

    def _release(self, claim: "Claim") -> None:
        with self._locked():
            cur = self.read(claim.cell)
            if cur is not None and cur.token == claim.token:
                self.path(claim.cell).unlink()

    def live_cells(self) -> set[str]:
        """Hashes of the cells whose claim has a heartbeat younger than the grace period."""
        now = time.time()
        return {h.cell for h in self.holders() if h.age(now) <= self.grace}

    def holders(self) -> list[Holder]:
        """Every claim in the folder, live or stale (for status displays and tests)."""
        if not self.folder.is_dir():
            return []
        return [h for p in sorted(self.folder.glob("*.json")) if (h := self.read(p.stem)) is not None]


class Claim:
    """This process's claim on one cell. As a context manager: a heartbeat thread while inside, the claim
    released on exit (also on Ctrl-C: the next start may run the cell at once)."""

    def __init__(self, board: Board, mine: Holder, previous: Optional[Holder] = None):
        self.board, self.cell, self.token = board, mine.cell, mine.token
        self.previous = previous  # the stale claim taken over, if any
        self.run_id = ""
        self.lost = False
        self._tracker = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------ heartbeat
    def _beat(self) -> None:
        """One heartbeat: the claim file, then (only when that succeeded) the run's tag."""
        if not self.board._update(self):
            self.lost = True
            return
        if self._tracker is not None and self.run_id:
            from strbench.contract import HEARTBEAT_TAG

            with contextlib.suppress(Exception):  # the claim file is what decides; a missed tag is harmless
                self._tracker.set_tags(self.run_id, {HEARTBEAT_TAG: _now_ms()})

    def _loop(self) -> None:
        while not self._stop.wait(self.board.heartbeat) and not self.lost:
            with contextlib.suppress(Exception):  # an I/O hiccup: try again at the next beat
                self._beat()

    def start(self) -> "Claim":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"strbench-heartbeat-{self.cell[:8]}",
                                            daemon=True)
            self._thread.start()
        return self

    def still_mine(self) -> bool:
        """Checked now (not at the last beat): the claim was not taken over."""
        if not self.lost:
            with contextlib.suppress(Exception):
                self.lost = not self.board._update(self)
        return not self.lost

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.board.heartbeat + LOCK_TIMEOUT_S)
        if not self.lost:
            self.board._release(self)

    def __enter__(self) -> "Claim":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------ the cell's run
    def attach(self, tracker, run_id: str) -> None:
        """The cell's MLflow run: recorded in the claim (a taker marks it FAILED) and given heartbeats."""
        self._tracker, self.run_id = tracker, run_id
        if not self.board._update(self, run_id=run_id):
            self.lost = True

    def watch(self, tracker) -> "_Watched":
        """`tracker` as the claimed cell's code should use it (see :class:`_Watched`)."""
        return _Watched(tracker, self)


class _Watched:
    """A Tracker seen by one claimed cell: the cell's run gets the claim's token and heartbeat tags, and a
    run whose claim was taken over meanwhile ends FAILED, never FINISHED (the taker runs the cell)."""

    def __init__(self, tracker, claim: Claim):
        self._tracker, self._claim = tracker, claim

    def __getattr__(self, name):
        return getattr(self._tracker, name)

    def start_cell(self, parent_id: str, cell_hash: str, *, run_name: str, tags, params) -> str:
        from strbench.contract import BOARD_TAG, CLAIM_TAG, HEARTBEAT_TAG

        run_id = self._tracker.start_cell(parent_id, cell_hash, run_name=run_name, params=params,
                                          tags={**tags, CLAIM_TAG: self._claim.token, HEARTBEAT_TAG: _now_ms(),
                                                BOARD_TAG: self._claim.board.id})
        if cell_hash == self._claim.cell:
            self._claim.attach(self._tracker, run_id)
        return run_id

    def end(self, run_id: str, status: str = "FINISHED", error: Optional[str] = None) -> None:
        if run_id == self._claim.run_id and status == "FINISHED" and not self._claim.still_mine():
            grace = self._claim.board.grace
            status, error = "FAILED", (f"claim lost: this process gave no heartbeat for over {grace:g} s "
                                       "(suspended?) and another process took the cell over")
        self._tracker.end(run_id, status, error=error)


def free_first(cells: Iterable, board: Board, busy: Callable[[Any], bool],
               ready: Callable[[Any], bool]) -> Iterator:
    """Every cell once, in the order that keeps processes out of each other's way: first a cell nobody has
    claimed whose models nobody is about to train (a model is about to be trained when it is not `ready`
    and a live claim is on a cell needing it, or when `busy(spec)`: its train lock is held), then any cell
    nobody has claimed, then the claimed ones (skipped, or found finished, when their turn comes). Two
    processes starting together thus train different models side by side instead of one waiting for the
    other's. Lazy: each choice is made just before its cell is claimed. Alone, the order is unchanged."""
    left = list(cells)
    while left:
        live = board.live_cells()
        models = {m.hash: m for c in left for m in c.models}
        soon = {m.hash for c in left if c.hash in live for m in c.models if not ready(m)}
        soon |= {h for h, m in models.items() if h not in soon and busy(m)}
        free = [c for c in left if c.hash not in live]
        pick = next((c for c in free if not any(m.hash in soon for m in c.models)), free[0] if free else left[0])
        left.remove(pick)
        yield pick


@dataclass
class Turn:
    """claim_cell's answer: the claim (run the cell) or why not, and the stale runs it marked FAILED."""

    claim: Optional[Claim]
    why: str = ""
    finished_elsewhere: bool = False
    stale: int = 0


def claim_cell(board: Board, tracker, cell_hash: str, label: str = "", *, since: Optional[float] = None) -> Turn:
    """Claim a cell just before running it (its heartbeat starts at once). Skipped (claim None) when a live
    holder has it, when it FINISHED meanwhile, when it FAILED in a run started after `since` (time.time()
    of this sweep's start: another process of this sweep met the error, retrying it here would repeat it),
    or when MLflow shows a RUNNING run with a live heartbeat claimed through another claims folder. A stale
    holder's RUNNING run, any RUNNING run of the cell whose heartbeat is older than the grace period, and any
    RUNNING run claimed through this folder (an orphan: the claim now held here is no one else's) are marked
    FAILED."""
    claim, prev = board.claim(cell_hash, label)
    if claim is None:
        return Turn(None, f"claimed by {prev.holder}, heartbeat {prev.age():.0f} s ago (taken over after "
                          f"{board.grace:g} s without one)")
    claim.start()
    try:
        if tracker.is_finished(cell_hash):
            claim.release()
            return Turn(None, "finished by another process", finished_elsewhere=True)
        if since is not None and tracker.failed_since(cell_hash, since):
            claim.release()
            return Turn(None, "failed in another process during this sweep (its run has the error); run the "
                              "command again to retry it")
        stale = 0
        if prev is not None and prev.run_id:
            stale += tracker.fail_run(prev.run_id, f"stale: {prev.holder} gave no heartbeat for {prev.age():.0f} s "
                                                   "without finishing this cell (killed?); it was run again")
        failed, live = tracker.fail_stale_runs([cell_hash], board.grace, board=board.id)
        stale += len(failed)
        if live:
            claim.release()
            return Turn(None, "RUNNING in MLflow with a live heartbeat (a process not sharing this cache folder)",
                        stale=stale)
        return Turn(claim, stale=stale)
    except BaseException:
        claim.release()
        raise


__all__ = ["Board", "Claim", "Holder", "Turn", "claim_cell", "free_first", "settings", "store_key", "DEFAULT_GRACE_S",
           "DEFAULT_HEARTBEAT_S", "GRACE_ENV", "HEARTBEAT_ENV"]
