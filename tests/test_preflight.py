"""Pre-flight checks (strbench.preflight): each bad input gives one line naming the key and the file, and the
folder is unchanged afterwards (nothing created, nothing modified); good inputs give a one-line summary."""
import http.server
import socket
import sqlite3
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from strbench import preflight as P
from strbench.errors import StrbenchError


def snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.is_dir())
            for p in sorted(root.rglob("*"))}


def refused(root, fn, *needles):
    """fn() raises a one-line StrbenchError containing every needle; `root` is unchanged."""
    before = snapshot(root)
    with pytest.raises(StrbenchError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 500, msg
    for n in needles:
        assert str(n) in msg, (n, msg)
    assert snapshot(root) == before
    return msg


def passed(root, fn):
    before = snapshot(root)
    out = fn()
    assert isinstance(out, P.Checked) and "\n" not in out.line
    assert snapshot(root) == before
    return out


# ----------------------------------------------------------------------------------------------- images
def _images(folder, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    files = []
    for i in range(n):
        f = folder / f"im{i:02d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(f)
        files.append(f)
    return files


def _truncate(f):
    f.write_bytes(f.read_bytes()[:60])


IMAGE_CASES = {
    "truncated jpeg": (lambda fs: _truncate(fs[2]), 2, "cannot read image"),
    "text as png": (lambda fs: fs[3].write_text("hello"), 3, "cannot read image"),
    "float tiff": (lambda fs: Image.fromarray(np.zeros((4, 4), np.float32)).save(fs[4], format="TIFF"), 4, "mode 'F'"),
    "empty file": (lambda fs: fs[5].write_bytes(b""), 5, "cannot read image"),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_bad_image_is_named(tmp_path, case):
    files = _images(tmp_path / "data")
    damage, i, needle = IMAGE_CASES[case]
    damage(files)
    refused(tmp_path, lambda: P.check_images(files, key="dataset.root"), "dataset.root", files[i], needle)


def test_images_all_and_sampled(tmp_path):
    files = _images(tmp_path / "data", n=10)
    out = passed(tmp_path, lambda: P.check_images(files, key="dataset.root"))
    assert out.line == "10 image(s) decode (all)"
    assert P.sample_indices(10, 3) == [0, 4, 9] and P.sample_indices(3, 5) == [0, 1, 2]
    _truncate(files[5])
    out = passed(tmp_path, lambda: P.check_images(files, key="dataset.root", sample=3))  # 5 is not sampled
    assert "a sample of 3 of 10" in out.line and "the loader checks the rest" in out.line
    _truncate(files[4])
    _truncate(files[9])
    msg = refused(tmp_path, lambda: P.check_images(files, key="dataset.root"), files[4], "3 of 10 checked files fail")
    assert str(files[5]) not in msg  # the first failure in file order is named


def test_no_images(tmp_path):
    refused(tmp_path, lambda: P.check_images([], key="dataset.root"), "dataset.root", "no image files")


# ----------------------------------------------------------------------------------------------- masks
def _mask(folder, name, hole_frac, size=(20, 20), white_is_hole=True):
    """A mask whose first round(hole_frac * H) rows are holes."""
    h, w = size[1], size[0]
    hole = np.zeros((h, w), bool)
    hole[: round(hole_frac * h)] = True
    px = np.where(hole == white_is_hole, 255, 0).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(px).save(folder / name)
    return folder / name


BINS = [(0.0, 0.25), (0.25, 0.5)]


def _good_masks(folder):
    for i, frac in enumerate([0.1, 0.2, 0.3, 0.4, 0.15, 0.35]):
        _mask(folder, f"m{i}.png", frac)


def test_mask_folder_ok_and_stops_like_the_run(tmp_path):
    _good_masks(tmp_path / "m")
    _mask(tmp_path / "m", "m9_zero.png", 0.0)
    out = passed(tmp_path, lambda: P.check_mask_folder(tmp_path / "m", 20, "white_is_hole", BINS, 3))
    assert "per bin: 0-25% 3, 25-50% 3" in out.line and "7 mask file(s)" in out.line
    out = passed(tmp_path, lambda: P.check_mask_folder(tmp_path / "m", 20, "white_is_hole", BINS, 2))
    assert out.line.startswith("4 of 7")  # reading stops once every bin is full, as load_mask_folder does
    out = passed(tmp_path, lambda: P.check_mask_folder(tmp_path / "m", 20, "white_is_hole", BINS, None))
    assert "1 with 0% holes (unused)" in out.line


def _wide(folder):
    _good_masks(folder)
    _mask(folder, "m0.png", 0.1, size=(40, 20))


MASK_CASES = {
    "wrong aspect": (_wide, {}, ["m0.png", "40x20", "aspect ratio"]),
    "corrupt file": (lambda f: (_good_masks(f), (f / "m1.png").write_bytes(b"\x89PNG junk")), {},
                     ["m1.png", "cannot read mask image"]),
    "empty folder": (lambda f: f.mkdir(), {}, ["holds no mask images"]),
    "missing folder": (lambda f: None, {}, ["does not exist"]),
    "bin short": (_good_masks, {"per_bin": 4}, ["bin 0-25% has 3 of the 4 masks", "also short: 25-50% 3"]),
    "need more": (_good_masks, {"per_bin": 6, "need": 4}, ["has 3 of the 4 masks"]),
    "all zero holes": (lambda f: [_mask(f, f"z{i}.png", 0.0) for i in range(3)], {},
                       ["bin 0-25% has 0 of the 3", "3 with 0% holes"]),
    "wrong polarity": (lambda f: [_mask(f, f"p{i}.png", 0.1, white_is_hole=False) for i in range(3)], {},
                       ["has 0 of the 3", "check the polarity"]),
    "full holes in bin": (lambda f: (_good_masks(f), _mask(f, "full.png", 1.0)), {"bins": [(0.0, 0.5), (0.5, 1.0)]},
                          ["full.png", "all hole", "50-100%"]),
}


@pytest.mark.parametrize("case", list(MASK_CASES))
def test_bad_mask_folder_is_named(tmp_path, case):
    make, kw, needles = MASK_CASES[case]
    folder = tmp_path / "masks"
    make(folder)
    args = {"bins": BINS, "per_bin": 3, **kw}
    refused(tmp_path, lambda: P.check_mask_folder(folder, 20, "white_is_hole", args["bins"], args["per_bin"],
                                                  need=args.get("need")), "masks.path", *needles)


# ----------------------------------------------------------------------------------------------- FID weights
class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("case", ["pickle", "text", "state_dict", "missing"])
def test_bad_fid_weights(tmp_path, monkeypatch, case):
    monkeypatch.setenv("STRBENCH_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.pth"
    if case == "pickle":
        torch.save({"a": _Payload(tmp_path / "ran")}, f)
    elif case == "text":
        f.write_text("weights\n")
    elif case == "state_dict":
        torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), f)
    refused(tmp_path, lambda: P.check_fid_weights(str(f)), "metrics.fid_weights", f)
    assert not (tmp_path / "ran").exists()


# ----------------------------------------------------------------------------------------------- tracking
def _mlflow_like(path, rows=400):
    con = sqlite3.connect(path)
    for t in P.MLFLOW_TABLES:
        con.execute(f"CREATE TABLE {t} (id INTEGER PRIMARY KEY, v TEXT)")
        con.executemany(f"INSERT INTO {t} (v) VALUES (?)", [("x" * 200,)] * rows)
    con.commit()
    con.close()
    return path


def _serve(status):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _db_case(tmp_path, case):
    db = tmp_path / "mlflow.db"
    if case == "text file":
        db.write_text("not a database\n" * 100)
    elif case == "truncated":
        _mlflow_like(db)
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    elif case == "zeroed pages":
        _mlflow_like(db)
        b = bytearray(db.read_bytes())
        b[len(b) // 2: len(b) // 2 + 8192] = bytes(8192)
        db.write_bytes(bytes(b))
    elif case == "not mlflow":
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE trials (id INTEGER)")
        con.commit()
        con.close()
    elif case == "a folder":
        db.mkdir()
    return f"sqlite:///{db}"


TRACKING_CASES = {
    "unknown scheme": (lambda t: "foo://somewhere", ["'foo'", "sqlite, file, http, https"]),
    "text file": (lambda t: _db_case(t, "text file"), ["mlflow.db", "not a readable SQLite database"]),
    "truncated": (lambda t: _db_case(t, "truncated"), ["mlflow.db"]),
    "zeroed pages": (lambda t: _db_case(t, "zeroed pages"), ["mlflow.db"]),
    "not mlflow": (lambda t: _db_case(t, "not mlflow"), ["mlflow.db", "not an MLflow store"]),
    "a folder": (lambda t: _db_case(t, "a folder"), ["mlflow.db", "is a folder"]),
    "sqlite host": (lambda t: "sqlite://host/db", ["sqlite:///<file>"]),
    "under a file": (lambda t: ((t / "f").write_text("x"), f"sqlite:///{t / 'f' / 'sub' / 'm.db'}")[1], ["is a file"]),
    "http down": (lambda t: f"http://127.0.0.1:{_closed_port()}", ["not reachable within"]),
    "http not mlflow": (lambda t: f"http://127.0.0.1:{_serve(503).server_port}", ["HTTP 503"]),
    "postgres down": (lambda t: f"postgresql+psycopg2://u:p@127.0.0.1:{_closed_port()}/db", ["postgresql server",
                                                                                            "not reachable"]),
    "file store is a file": (lambda t: ((t / "store").write_text("x"), f"file://{t / 'store'}")[1], ["is a file"]),
    "empty": (lambda t: " ", ["empty"]),
}


@pytest.mark.parametrize("case", list(TRACKING_CASES))
def test_bad_tracking_uri(tmp_path, case):
    make, needles = TRACKING_CASES[case]
    uri = make(tmp_path)
    refused(tmp_path, lambda: P.check_tracking(uri, timeout=0.5), "tracking.uri", *needles)


def test_tracking_silent_server_times_out(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)  # accepts the connection, never answers
    try:
        refused(tmp_path, lambda: P.check_tracking(f"http://127.0.0.1:{s.getsockname()[1]}", timeout=0.3),
                "tracking.uri", "not reachable within 0.3 s")
    finally:
        s.close()


def test_good_tracking_uris_create_nothing(tmp_path):
    _mlflow_like(tmp_path / "ok.db")
    assert "readable MLflow store" in passed(tmp_path, lambda: P.check_tracking(f"sqlite:///{tmp_path / 'ok.db'}")).line
    (tmp_path / "empty.db").write_bytes(b"")
    assert "empty SQLite" in passed(tmp_path, lambda: P.check_tracking(f"sqlite:///{tmp_path / 'empty.db'}")).line
    new = tmp_path / "sub" / "dir" / "mlflow.db"
    assert "does not exist yet" in passed(tmp_path, lambda: P.check_tracking(f"sqlite:///{new}")).line
    srv = _serve(200)
    try:
        assert "answers" in passed(tmp_path, lambda: P.check_tracking(f"http://127.0.0.1:{srv.server_port}")).line
    finally:
        srv.shutdown()
    assert "file store" in passed(tmp_path, lambda: P.check_tracking(str(tmp_path / "mlruns"))).line
