"""Launchers: --slurm.* options parse to submitit parameters; submitit's local executor runs one job per group
of cells that share models, all into one tracking store."""
import sqlite3
from pathlib import Path

import pytest
import yaml

from strbench import cli
from strbench.errors import ConfigError
from strbench.experiment.launch import slurm_parameters, split_slurm_args


def test_slurm_options_become_submitit_parameters():
    rest, opts = split_slurm_args(["run", "x.yaml", "--slurm.partition", "gpu", "--slurm.gpus_per_node=4",
                                   "--slurm.timeout_min", "90", "--slurm.exclusive", "true", "-q"])
    assert rest == ["run", "x.yaml", "-q"] and opts == {"partition": "gpu", "gpus_per_node": 4, "timeout_min": 90,
                                                          "exclusive": True}
    p = slurm_parameters(opts)
    assert p["gpus_per_node"] == 4 and p["timeout_min"] == 90 and p["slurm_partition"] == "gpu"
    assert p["slurm_exclusive"] is True and p["tasks_per_node"] == 1
    with pytest.raises(ConfigError, match="give a value"):
        split_slurm_args(["--slurm.partition"])


def test_slurm_options_without_the_slurm_launcher_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.yaml").write_text("name: x\n")
    assert cli.main(["run", "x.yaml", "--slurm.partition", "gpu"]) == 2
    assert "need --launcher slurm" in capsys.readouterr().err


@pytest.mark.slow
def test_submitit_local_runs_two_cell_groups_into_one_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    cfg = {"name": "jobs", "dataset": {"type": "builtin", "size": 16}, "masks": {"bins": [[0.1, 0.3], [0.3, 0.5]],
           "per_bin": 2}, "schedule": {"texture": {"T": 3}}, "nets": {"arch": "authors", "preset": "tiny"},
           "models": {"irsde": "random:0"}, "methods": {"IR-SDE": {"method": "irsde"}},  # + the biharmonic floor
           "sample": {"batch": 2}, "metrics": {"fid": False, "kid": False, "bootstrap": 0}, "device": "cpu"}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["run", "x.yaml", "--launcher", "submitit-local"]) == 0
    c = sqlite3.connect(tmp_path / "mlflow.db")
    rows = c.execute("""select t.value, r.status from runs r join tags t on t.run_uuid = r.run_uuid
                        and t.key = 'strbench.case'""").fetchall()
    assert sorted(rows) == [("IR-SDE", "FINISHED")] * 2 + [("biharmonic", "FINISHED")] * 2
    jobs = [p for p in (tmp_path / ".strbench" / "jobs").iterdir() if p.is_dir() and p.name.isdigit()]
    assert len(jobs) == 2  # one job per model group: the IR-SDE model's cells, the network-free floor's
