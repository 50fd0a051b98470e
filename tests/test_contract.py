"""The tracking contract (strbench.contract): pure; its names are the only spelling of strbench's tags (no module
writes a "strbench.<name>" or "tags.<...>" literal of its own); experiments strbench creates or reuses carry the
experiment tag that MLflow's UI reads as the model-training kind (a tiny run's and a tuning study's)."""
from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import yaml

from strbench import contract, tracking
from helpers import migrated_db, tiny

ROOT = Path(__file__).resolve().parents[1]
# strings that start like a tag but name a module: the methods' entry-point group, a logger, `python -m`
MODULE_NAMES = {("strbench/methods/__init__.py", "strbench.methods"), ("strbench/checkpoint.py", "strbench.checkpoint"),
                ("strbench/bench_gpu.py", "strbench.bench_gpu"), ("strbench/experiment/plan.py", "strbench.experiment")}
SEARCH_SYNTAX = "strbench/tracking/store.py"  # where MLflow's search filters on tags (tags.`name` = ...) are spelled
TAG_LITERAL = re.compile(r"^(?:tags\.|(?:tags\.)?strbench\.)")


def _string_body(token: str) -> str:
    """The text of a string literal token without its prefix and quotes (f-strings: with their {fields})."""
    i = next(i for i, c in enumerate(token) if c in "'\"")
    q = token[i:i + 3] if token[i:i + 3] in ('"""', "'''") else token[i]
    return token[i + len(q):len(token) - len(q)]


def _docstring_lines(src: str) -> set[int]:
    """First lines of the strings that stand as statements of their own (docstrings)."""
    return {n.lineno for n in ast.walk(ast.parse(src))
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}


def tag_literals(files) -> list[str]:
    """'path:line: literal' for every string literal of `files` spelling a tag or a tag column of its own."""
    out = []
    for f in files:
        rel = f.relative_to(ROOT).as_posix()
        if rel == "strbench/contract.py":
            continue
        src = f.read_text()
        docs = _docstring_lines(src)
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type != tokenize.STRING or tok.start[0] in docs:
                continue
            body = _string_body(tok.string)
            if not TAG_LITERAL.match(body) or (rel == SEARCH_SYNTAX and body.startswith("tags.`")):
                continue
            name = re.match(r"[\w.]*", body).group(0).rstrip(".")
            if any(rel == p and (name == m or name.startswith(m + ".")) for p, m in MODULE_NAMES):
                continue
            out.append(f"{rel}:{tok.start[0]}: {body[:60]}")
    return out


def _modules() -> list[Path]:
    return sorted((ROOT / "strbench").rglob("*.py"))


def test_contract_is_pure():
    code = "import sys, strbench.contract; print(sorted(m for m in ('mlflow', 'pandas', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_contract_names():
    assert contract.tag("role") == contract.ROLE_TAG == "strbench.role"
    assert contract.column(contract.CELL_HASH_TAG) == "tags.strbench.cell_hash"
    assert contract.metric_column("psnr") == "metrics.psnr" and contract.missing_tag("fid") == "strbench.fid_missing"
    assert contract.Kind.ALL == ("experiment", "cell", "training", "study", "trial")
    assert contract.ui_link("3", "abc") == "#/experiments/3/runs/abc?workflowType=machine_learning"
    tags = [v for k, v in vars(contract).items() if k.endswith("_TAG")]
    assert len(tags) == len(set(tags))  # no two meanings share a tag


def test_no_module_spells_a_tag_of_its_own():
    assert tag_literals(_modules()) == []


def _kind(client, name: str):
    return client.get_experiment_by_name(name).tags.get(contract.EXPERIMENT_KIND_TAG)


def test_a_tiny_runs_experiment_opens_as_model_training(tmp_path):
    """A real run (one no-learning method, one cell) creates its experiment with the kind tag."""
    from strbench import config
    from strbench.experiment import run as run_mod

    d = tiny(tmp_path)
    d["methods"], d["floors"] = {"biharmonic": {"method": "biharmonic"}}, False
    d["masks"]["bins"] = [[0.1, 0.3]]
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(d))
    migrated_db(tmp_path)
    assert run_mod.run_experiment(config.load_experiment(str(p))).ran == 1
    client = tracking.Tracker(d["tracking"]["uri"], "tiny").client
    assert _kind(client, "tiny") == contract.EXPERIMENT_KIND == "custom_model_development"


def test_a_studys_experiment_and_an_older_untagged_one_are_tagged(tmp_path):
    migrated_db(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs = tracking.StudyRuns(uri, "tiny-tune", "schedules", str(tmp_path / "art"))
    runs.finish_parent(runs.parent(params={}, tags={}), {})
    client = runs.tracker.client
    assert _kind(client, "tiny-tune") == contract.EXPERIMENT_KIND
    old = client.create_experiment("made-before")  # by an earlier strbench: no kind tag
    assert _kind(client, "made-before") is None
    assert tracking.Tracker(uri, "made-before").experiment_id == old
    assert _kind(client, "made-before") == contract.EXPERIMENT_KIND
    client.set_experiment_tag(old, contract.EXPERIMENT_KIND_TAG, "genai_development")  # a person's choice stays
    tracking.Tracker(uri, "made-before")
    assert _kind(client, "made-before") == "genai_development"
