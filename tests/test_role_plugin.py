"""A method that brings its own network is one file and one registration (tests/plugins/fillnet_plugin.py).

The plugin declares a new role ``fillnet`` (its network factory and its training objective) and a method that
samples with it, and is registered the way an installed package registers methods: one entry point in group
``strbench.methods`` (written here as the ``*.dist-info`` that ``pip install`` would write). In a fresh
interpreter that sees the registration, the quickstart's tiny setting (16 px, T = 5, 4 training steps) trains
the role's network through the model cache, samples and scores its cells, and builds Table 1 with its row;
``nets.roles``, ``train.roles`` and ``models:`` (pretrained per role) accept the new role. Nothing outside the
plugin's file names it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PLUGINS = TESTS / "plugins"

DRIVER = r'''
import json, sys
from pathlib import Path

from strbench import config, experiment, report, roles
from helpers import tiny

tmp = Path(sys.argv[1])
out = {"roles": list(roles.names())}
d = tiny(tmp, methods={"FillNet": {"method": "fillnet"}})
d["nets"]["roles"]["fillnet"] = {"nf": 6}  # the schema learned the role
d["train"]["roles"] = {"fillnet": {"steps": 4}}
exp = config.load_experiment(d)
cells = experiment.expand(exp)
out["models"] = sorted({m.role for c in cells for m in c.models})
out["net"] = cells[0].model("fillnet").train.net
summary = experiment.run_experiment(exp)
out["ran"], out["failed"] = summary.ran, [f[2] for f in summary.failed]
res = experiment.Resources(exp.cache_dir, device="cpu")
spec = cells[0].model("fillnet")
out["status"] = res.model_status(spec)
out["params"] = sum(p.numel() for p in res.model(spec).parameters())
rep = report.table_report(1, "tiny", exp.tracking.uri)
out["rows"] = [r.label for r in rep.table.rows]
out["psnr"] = [v for r in rep.table.rows for (m, _), v in r.values.items() if m == "psnr"]
d["models"] = {"fillnet": "random:0"}  # loaded instead of trained
pre = experiment.expand(config.load_experiment(d))[0].model("fillnet")
out["pretrained"] = [pre.source, type(res.model(pre)).__name__]
print(json.dumps(out))
'''


def register(site: Path) -> None:
    """The plugin's registration: its entry point, as installing a package that declares it would write it."""
    info = site / "strbench_fillnet_plugin-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: strbench-fillnet-plugin\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[strbench.methods]\nfillnet = fillnet_plugin:METHOD\n")


def test_a_method_with_its_own_network_trains_samples_and_tables(tmp_path):
    site = tmp_path / "site"
    register(site)
    path = [str(site), str(PLUGINS), str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "run")], env=env, capture_output=True,
                       text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["roles"][-1] == "fillnet" and "irsde" in out["roles"]
    assert out["models"] == ["fillnet"] and out["net"] == {"nf": 6}
    assert out["failed"] == [] and out["ran"] == 2  # two mask bins
    assert out["status"] == "cached" and out["params"] > 0
    assert any("FillNet" in label for label in out["rows"]), out["rows"]
    assert out["psnr"] and all(v is None or v > 0 for v in out["psnr"])
    assert out["pretrained"] == ["random:0", "FillNet"]


def test_without_the_registration_the_role_is_unknown():
    """The role exists only through the plugin's registration (this process does not see it)."""
    import pytest

    from strbench import roles
    from strbench.errors import ConfigError

    assert "fillnet" not in roles.names()
    with pytest.raises(ConfigError, match="unknown training role 'fillnet'"):
        roles.get("fillnet")
