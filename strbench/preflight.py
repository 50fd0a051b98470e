"""Pre-flight checks: read what a run will read, before any run, store or cache entry exists.

Pure checks: no MLflow run, no file or folder is created or changed (SQLite is opened read-only). Each check
returns a `Checked` (its key and a one-line summary for `validate` / `--dry-run`) or raises a strbench error
whose message is one line: the key, the file, the fix. The caller (runner / CLI) decides which to run and
may prefix the experiment file.

- `check_images(files, key=...)`: every file decodes with the run's decoder (`data.open_image`); with
  `sample=N`, N files evenly spaced in the given order (first and last included), and the summary says so.
- `check_mask_folder(path, size, polarity, bins, per_bin, key=...)`: the masks decode, resize and bin
  exactly as `masks.load_mask_folder` reads them (same loop, same early stop); a mask of another aspect
  ratio is refused (resizing would distort it; crop the masks); each bin needs `need` masks (default
  `per_bin`); a 100%-hole mask inside a bin is refused (nothing known to inpaint from); 0%-hole masks lie
  outside every bin and are only reported in the summary.
- `check_pairs(path, size, polarity, bins, images=..., key=...)`: masks.pairing by_name (strbench.pairing): no
  image without a mask, no mask without its image, every mask decodes and is binned from its own pixels, each
  bin (lo, hi, per_bin) holds a pair and no 100%-hole mask, the scored images decode.
- `check_fid_weights(path)`: `fid_weights.check_fid_weights` (weights_only load, layout and checksums).
- `check_lpips_weights(net, path)`: `lpips_weights.resolve_lpips_weights` (the same checks; none found: a pass
  saying LPIPS will be n/a).
- `check_tracking(uri)`: the scheme is one MLflow accepts here; a SQLite file, if it exists, is a readable
  database with MLflow's tables (integrity by `PRAGMA quick_check`) and its folder exists; an HTTP(S) server
  answers `/health` within `timeout`; a database server's port accepts a TCP connection within `timeout`.
- `check_artifacts(location, uri)`: the artifact folder new experiments write to is a writable folder, or can
  be created.
"""
from __future__ import annotations

import os
import socket
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from strbench.contract import DEFAULT_URI
from strbench.errors import ConfigError, DataError, StrbenchError, WeightsError


@dataclass(frozen=True)
class Checked:
    """A passed check: the key it concerns and one line saying what was verified."""
    key: str
    line: str

    def __str__(self) -> str:
        return f"{self.key}: {self.line}"


def _keyed(key: str, e: StrbenchError) -> StrbenchError:
    """The same error type with the key in front (once)."""
    msg = str(e)
    return type(e)(msg if msg.startswith(f"{key}:") else f"{key}: {msg}")


# ----------------------------------------------------------------------------------------------- images
def sample_indices(n: int, k: int) -> list[int]:
    """k indices evenly spaced over range(n), first and last included (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _decode(path) -> str | None:
    from strbench.data import open_image
    try:
        open_image(path, "RGB")
    except DataError as e:
        return str(e)
    return None


def check_images(files: Sequence, *, key: str, sample: int | None = None, workers: int | None = None) -> Checked:
    """Every file (or a deterministic sample of `sample` files) decodes as the run decodes it.
    On failure: DataError naming the key, the first failing file in order, and how many failed."""
    files = list(files)
    if not files:
        raise DataError(f"{key}: no image files to check; point it at a folder or list holding images")
    if sample is not None and (isinstance(sample, bool) or int(sample) < 1):
        raise ValueError(f"sample must be a positive integer or None; got {sample!r}")
    idx = sample_indices(len(files), int(sample)) if sample is not None else list(range(len(files)))
    picked = [files[i] for i in idx]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow releases the GIL while decoding
        errors = [e for e in pool.map(_decode, picked) if e is not None]
    if errors:
        more = f" ({len(errors)} of {len(picked)} checked files fail)" if len(errors) > 1 else ""
        raise DataError(f"{key}: {errors[0]}{more}")
    how = ("all" if len(picked) == len(files) else
           f"a sample of {len(picked)} of {len(files)}, evenly spaced in file order; the loader checks the rest")
    return Checked(key, f"{len(picked)} image(s) decode ({how})")


# ----------------------------------------------------------------------------------------------- masks
def check_mask_folder(path, size, polarity: str, bins, per_bin: int | None, *, key: str = "masks.path",
                      need: int | None = None) -> Checked:
    """The mask folder as the run reads it (`masks.scan_mask_folder` with these bins and per_bin): every mask
    read decodes and has the run's aspect ratio, no bin holds a 100%-hole mask, and every bin holds at least
    `need` masks (default per_bin, else 1). The runner loads 2 x n per bin (test + val): pass per_bin=2n, need=n."""
    from strbench import masks as M

    try:
        scan = M.scan_mask_folder(path, size, polarity, bins, per_bin)
    except StrbenchError as e:
        raise _keyed(key, e) from None
    except ValueError as e:  # bins / per_bin themselves
        raise ConfigError(f"{key}: {e}") from None
    use_bins = M.DEFAULT_BINS if bins is None else M._check_bins(bins)
    need = int(need if need is not None else (per_bin or 1))
    full_in_bin = [f for f in scan.full_hole if M.bin_of(1.0, use_bins) is not None]
    if full_in_bin:
        raise DataError(f"{key}: mask {scan.root / full_in_bin[0]} is all hole (100%, no known pixel) and falls in "
                        f"bin {M.bin_of(1.0, use_bins)} ({len(full_in_bin)} such mask(s)); there is nothing to "
                        "inpaint from: remove them or end the last bin below 1")
    short = [(label, n) for label, n in scan.per_bin.items() if n < need]
    if short:
        label, n = short[0]
        others = f"; also short: {', '.join(f'{b} {c}' for b, c in short[1:])}" if len(short) > 1 else ""
        zero = f", {len(scan.zero_hole)} with 0% holes" if scan.zero_hole else ""
        raise DataError(f"{key}: bin {label} has {n} of the {need} masks it needs in {scan.root} ({scan.n_read} "
                        f"masks read{zero}{others}); add masks in that hole-ratio range, lower per_bin, or change "
                        f"the bins (check the polarity: {polarity})")
    notes = [f"{len(scan.zero_hole)} with 0% holes (unused)"] if scan.zero_hole else []
    notes += [f"{len(scan.full_hole)} with 100% holes (unused)"] if scan.full_hole else []
    counts = ", ".join(f"{b} {n}" for b, n in scan.per_bin.items())
    return Checked(key, f"{scan.n_read} of {scan.n_files} mask file(s) read and decode; per bin: {counts}"
                        + (f"; {', '.join(notes)}" if notes else ""))


def check_pairs(path, size, polarity: str, bins: Sequence, *, images: Sequence | None = None, image_root=None,
                key: str = "masks.path") -> Checked:
    """masks.pairing by_name (`pairing.pair_by_name`): every image has a mask and every mask its image; every mask
    decodes, has the run's aspect ratio and is binned from its own pixels; each bin (lo, hi, per_bin) of `bins` holds
    a pair and no 100%-hole mask; the images of the pairs the cells score decode. `images`/`image_root`: the
    dataset's test files, for masks named after them (None: the built-in photos)."""
    from strbench import masks as M
    from strbench import pairing as P

    try:
        pairing = P.pair_by_name(path, images, image_root)
        ratios = P.pair_ratios(pairing, int(size), polarity)
    except StrbenchError as e:
        raise _keyed(key, e) from None
    counts, picked, capped = [], set(), False
    for lo, hi, per_bin in bins:
        label, idx = M.bin_label(lo, hi), P.in_bin_indices(ratios, lo, hi)
        full = [pairing.pairs[i].mask for i in idx if ratios[i] == 1.0]
        if full:
            raise DataError(f"{key}: mask {full[0]} is all hole (100%, no known pixel) and falls in bin {label} "
                            f"({len(full)} such mask(s)); there is nothing to inpaint from: remove them or end the "
                            "last bin below 1")
        if not idx:
            lo_r, hi_r = min(ratios), max(ratios)
            raise DataError(f"{key}: no mask of the {len(ratios)} image-mask pairs in {pairing.root} has a hole ratio "
                            f"in bin {label} (theirs lie in {lo_r:.1%}-{hi_r:.1%}); change masks.bins (e.g. [[0, 1]]: "
                            f"one cell over the whole set) or check masks.polarity ({polarity})")
        counts.append(f"{label} {min(per_bin, len(idx))}" + (f" of {len(idx)}" if len(idx) > per_bin else ""))
        capped |= len(idx) > per_bin
        picked.update(pairing.pairs[i].image for i in idx[:per_bin])
    where = "masks.path" if pairing.layout == P.BESIDE else "dataset.root"
    decoded = check_images(sorted(picked), key=f"{where} (test images)")
    outside = sum(1 for r in ratios if not any(M.in_bin(r, lo, hi) for lo, hi, _ in bins))
    line = (f"{pairing.n_images} image(s) with {len(ratios)} mask(s) paired by name ({P.LAYOUT_TEXT[pairing.layout]}); "
            f"pairs scored per bin: {', '.join(counts)}")
    line += f"; {outside} pair(s) in no bin" if outside else ""
    line += "; masks.per_bin caps a bin (raise it to score every pair)" if capped else ""
    return Checked(key, f"{line}; {decoded.line}")


# ----------------------------------------------------------------------------------------------- FID weights
def check_fid_weights(path=None, *, key: str = "metrics.fid_weights") -> Checked:
    """`fid_weights.check_fid_weights`: the file a run would use, loaded with weights_only=True and verified."""
    from strbench import fid_weights

    try:
        p, sha = fid_weights.check_fid_weights(path)
    except WeightsError as e:
        raise e if key in str(e) else _keyed(key, e) from None
    return Checked(key, f"{p} (sha256 {sha[:12]}...) verified")


def check_lpips_weights(net: str = "alex", path=None, *, key: str = "metrics.lpips_weights") -> Checked:
    """`lpips_weights.resolve_lpips_weights`: the backbone file a run would use, verified; none found (no path
    given) passes with a line saying LPIPS will be n/a, a path given that fails is an error."""
    import os

    from strbench import lpips_weights

    try:
        p, sha = lpips_weights.resolve_lpips_weights(net, path)
    except WeightsError as e:
        if path is not None or os.environ.get(lpips_weights.ENV_WEIGHTS):
            raise e if key in str(e) else _keyed(key, e) from None
        return Checked(key, f"no {net} backbone found, LPIPS will be n/a ({e})")
    return Checked(key, f"{p} (sha256 {sha[:12]}...) verified")


# ----------------------------------------------------------------------------------------------- tracking
SQL_SCHEMES = ("postgresql", "mysql", "mssql")  # SQLAlchemy back ends MLflow supports, `+driver` allowed
ACCEPTED_SCHEMES = ("sqlite", "file", "http", "https") + SQL_SCHEMES
MLFLOW_TABLES = ("experiments", "runs", "metrics", "params", "tags")
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def sqlite_file(uri: str) -> Path | None:
    """The database file of `sqlite:///relative` or `sqlite:////absolute`; None for an in-memory `sqlite://`.
    ValueError for a host-style `sqlite://host/...`."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    if rest in ("", "/", "/:memory:"):
        return None
    if not rest.startswith("/"):
        raise ValueError(f"{uri!r} is not sqlite:///<file>; write {DEFAULT_URI} (relative to the working "
                         "folder) or sqlite:////abs/path/mlflow.db")
    return Path(urllib.parse.unquote(rest[1:].split("?", 1)[0]))


def _creatable(path: Path, key: str, what: str) -> None:
    """The run creates `path` and its missing folders (as tracking.Tracker does): the nearest existing ancestor
    must be a writable folder."""
    anc = path.absolute().parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise DataError(f"{key}: the {what} {path} cannot be created: {anc} is a file, not a folder; fix the URI")
    if not os.access(anc, os.W_OK):
        raise DataError(f"{key}: the {what} {path} cannot be created: {anc} is not writable; point the URI "
                        "elsewhere")


def _check_sqlite(uri: str, key: str) -> str:
    try:
        path = sqlite_file(uri)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None
    if path is None:
        return "in-memory SQLite (nothing kept after the run)"
    if path.is_dir():
        raise DataError(f"{key}: {path} (from {uri}) is a folder, not a database file; name a file, e.g. "
                        f"sqlite:///{path / 'mlflow.db'}")
    if not path.exists():
        _creatable(path, key, "database")
        return f"{path} does not exist yet (the run creates it)"
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as e:
        raise DataError(f"{key}: {path} cannot be opened read-only ({e}); check its permissions") from None
    try:
        check = con.execute("PRAGMA quick_check").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        schema = (con.execute("SELECT version_num FROM alembic_version").fetchone() or [None])[0] \
            if "alembic_version" in tables and check == "ok" else None
    except sqlite3.Error as e:
        raise DataError(f"{key}: {path} is not a readable SQLite database ({e}); move it aside to start a "
                        "new store, or point the URI at the right file") from None
    finally:
        con.close()
    if check != "ok":
        what = " ".join(str(check).split())
        what = what if len(what) <= 120 else what[:117] + "..."
        raise DataError(f"{key}: {path} is a damaged SQLite database (quick_check: {what}); restore it from a "
                        "copy or move it aside to start a new store")
    if not tables:
        return f"{path} is an empty SQLite database (MLflow creates its tables)"
    missing = [t for t in MLFLOW_TABLES if t not in tables]
    if missing:
        raise DataError(f"{key}: {path} is an SQLite database but not an MLflow store (no table {missing[0]!r}); "
                        "point the URI at an MLflow database or a new file")
    head = _mlflow_schema_head() if schema is not None else None
    if head is not None and schema != head:  # MLflow refuses to open it (and never upgrades it by itself)
        raise DataError(f"{key}: {path} holds MLflow schema {schema}, but the installed MLflow expects {head} (a "
                        f"store of another MLflow version); back it up and run `mlflow db upgrade sqlite:///{path}`, "
                        "or point the URI at a new file")
    return f"{path} is a readable MLflow store"


def _mlflow_schema_head() -> str | None:
    """The database schema revision the installed MLflow expects (None when it cannot tell)."""
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        return _get_latest_schema_revision()
    except Exception:  # noqa: BLE001 - a private helper of MLflow: skip the check rather than fail
        return None


def _check_http(uri: str, key: str, timeout: float) -> str:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"{key}: the MLflow server {uri} is not reachable within {timeout:g} s "
                          f"({' '.join(str(reason).split())}); start it or fix the URI") from None
    if status != 200:
        raise ConfigError(f"{key}: {url} answered HTTP {status}, not an MLflow server's OK; check the URI "
                          "(host, port, path)")
    return f"MLflow server {uri} answers"


def _check_sql_server(uri: str, scheme: str, key: str, timeout: float) -> str:
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or "localhost"
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ConfigError(f"{key}: {uri!r} has an invalid port; fix the URI") from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(f"{key}: the {scheme} server {host}:{port} is not reachable within {timeout:g} s "
                          f"({' '.join(str(e).split())}); start it or fix the URI") from None
    return f"{scheme} server {host}:{port} accepts connections (credentials are checked by the run)"


def _check_file_store(uri: str, key: str) -> str:
    path = Path(urllib.parse.unquote(uri[len("file://"):] if uri.startswith("file://") else uri[len("file:"):]
                                     if uri.startswith("file:") else uri))
    if path.exists() and not path.is_dir():
        raise DataError(f"{key}: {path} is a file, but a file store is a folder; use sqlite:///{path} for a "
                        "database or name a folder")
    if not path.exists():
        _creatable(path, key, "file store")
    return f"file store {path}" + ("" if path.exists() else " (the run creates it)")


def check_tracking(uri: str, *, key: str = "tracking.uri", timeout: float = 3.0) -> Checked:
    """The tracking URI is usable, checked without creating or changing anything (see the module docstring)."""
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(f"{key}: empty; e.g. {DEFAULT_URI}")
    if "://" in uri:
        scheme = uri.split("://", 1)[0].lower()
    else:  # `file:/path`, or a plain folder path (a file store)
        scheme = "file" if uri.lower().startswith("file:") else ""
    base = scheme.split("+", 1)[0]
    if scheme and base not in ACCEPTED_SCHEMES:
        raise ConfigError(f"{key}: scheme {scheme!r} of {uri!r} is not one of {', '.join(ACCEPTED_SCHEMES)}; "
                          f"e.g. {DEFAULT_URI} or http://localhost:5000")
    if base == "sqlite":
        line = _check_sqlite(uri, key)
    elif base in ("http", "https"):
        line = _check_http(uri, key, timeout)
    elif base in SQL_SCHEMES:
        line = _check_sql_server(uri, base, key, timeout)
    else:  # file: URI or a plain folder path
        line = _check_file_store(uri, key)
    return Checked(key, line)


def check_artifacts(location: str | None, uri: str, *, key: str = "tracking.artifact_location") -> Checked:
    """Where new experiments' artifacts go is writable: a folder (or file:// URI) exists as a writable folder or
    can be created (its nearest existing ancestor is a writable folder); not set: ./mlartifacts for a local
    store, the server's own default otherwise (not checked from here); another URI (s3://, ...) is left to
    its client. (An existing MLflow experiment keeps the location it was created with.)"""
    from strbench.contract import DEFAULT_ARTIFACTS

    local_store = uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri
    if not location:
        if not local_store:
            return Checked(key, "not set: the tracking server's own artifact store")
        location = DEFAULT_ARTIFACTS
    if "://" in location and not location.startswith("file://"):
        return Checked(key, f"{location} (checked by its client when the run writes)")
    path = Path(urllib.parse.unquote(location[len("file://"):]) if location.startswith("file://") else location)
    path = path.expanduser()
    if path.exists():
        if not path.is_dir():
            raise DataError(f"{key}: {path} is a file, not a folder; name a folder for the artifacts")
        if not os.access(path, os.W_OK | os.X_OK):
            raise DataError(f"{key}: {path} is not writable; make it writable or point {key} elsewhere")
        return Checked(key, f"{path} (writable)")
    _creatable(path, key, "artifact folder")
    return Checked(key, f"{path} (the run creates it)")
