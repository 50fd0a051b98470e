"""`strbench bench` (overhead benchmarks) and `strbench rescore` (metrics again from saved outputs)."""
from __future__ import annotations

from typing import Optional

from strbench.cli.console import fmt
from strbench.contract import DEFAULT_URI
from strbench.errors import ConfigError


def add_bench(sub):
    p = sub.add_parser("bench", help="overhead benchmarks (training step, samplers)")
    p.add_argument("what", choices=["train", "sample", "data", "gpu", "all"])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=None, help="image size (default: preset's)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--preset", default=None, help="net preset (default: each benchmark's own)")
    p.add_argument("--repeats", type=int, default=None)
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(a) -> int:
    return bench_command(a.what, device=a.device, size=a.size, batch=a.batch, preset=a.preset, repeats=a.repeats)


def format_train(res: dict) -> str:
    """`bench_train`'s result: the overhead table per role, then the parameters of every preset and role."""
    s = res["setup"]
    roles = [k for k in res["params"][0] if k != "preset"] if res["params"] else []
    lines = [f"training-step overhead: preset {s['preset']}, {s['size']} px, batch {s['batch']}, device "
             f"{s['device']}, amp {s['amp']}, median of {s['repeats']} blocks x {s['block']} steps (aim: ratio <= 1.15)",
             f"{'role':<14}{'params':>11}{'full step ms':>14}{'bare step ms':>14}{'ratio':>8}"]
    for r in res["overhead"]:
        lines.append(f"{r['role']:<14}{r['params']:>11,}{r['full_ms']:>14.2f}{r['bare_ms']:>14.2f}{r['ratio']:>8.3f}")
    lines += ["", "parameters per preset", f"{'preset':<8}" + "".join(f"{r:>15}" for r in roles)]
    for p in res["params"]:
        lines.append(f"{p['preset']:<8}" + "".join(f"{p[r]:>15,}" for r in roles))
    return "\n".join(lines)


def format_sample(rows: list[dict]) -> str:
    """`bench_sample`'s rows: wall time vs the bare forwards per sampler."""
    s = rows[0]
    lines = [f"sampler overhead: preset {s['preset']}, {s['size']} px, batch {s['batch']}, T {s['T']}, device "
             f"{s['device']}, median of {s['repeats']} repeats (aim: ratio <= 1.10)",
             f"{'sampler':<25}{'nfe':>6}{'wall s':>9}{'expected s':>12}{'ratio':>8}{'(min-max)':>15}  nfe by net"]
    for r in rows:
        lines.append(f"{r['sampler']:<25}{r['nfe']:>6}{r['wall_s']:>9.3f}{r['expected_s']:>12.3f}{r['ratio']:>8.3f}"
                     f"   ({r['ratio_min']:.3f}-{r['ratio_max']:.3f})  {r['nfe_by_net']}")
    return "\n".join(lines)


def format_data(row: dict) -> str:
    """`bench_data`'s row: loader images/s vs training-step images/s."""
    r = row
    return "\n".join([
        f"data loading vs training: {r['images']} PNGs at {r['size']} px (random_crop, flip, fresh mask, gray2edge "
        f"maps), {r['workers']} loader worker(s); texture step of preset {r['preset']}, batch {r['batch']}, device "
        f"{r['device']}; median of {r['repeats']} (aim: ratio >= 1)",
        f"{'loader img/s':>14}{'step img/s':>12}{'ratio':>8}",
        f"{r['loader_img_s']:>14.1f}{r['step_img_s']:>12.2f}{r['ratio']:>8.2f}"])


def _print_row(row: dict) -> None:
    print(row, flush=True)


# benchmark name -> (extra keyword arguments, formatter of what it returns); `gpu` prints each row as it comes
_SHOW = {"train": ({}, format_train), "sample": ({}, format_sample), "data": ({}, format_data),
         "gpu": ({"on_row": _print_row}, None)}


def bench_command(what: str, device: str = "auto", size: Optional[int] = None, batch: Optional[int] = None,
                  preset: Optional[str] = None, repeats: Optional[int] = None) -> int:
    """``strbench bench <what>``: run one registered benchmark (strbench.bench.BENCHES), or all of them, and print
    what each returns."""
    from strbench.bench import BENCHES

    names = list(BENCHES) if what == "all" else [what]
    for name in names:
        if name not in BENCHES:
            raise ConfigError(f"bench: no benchmark named {name!r}; available: {sorted(BENCHES)} or all")
    for i, name in enumerate(names):
        if i:
            print()
        kw = {} if preset is None else {"preset": preset}  # each benchmark has its own default preset
        extra, show = _SHOW.get(name, ({}, None))
        out = BENCHES[name](device=device, size=size, batch=batch, repeats=repeats, **kw, **extra)
        if show is not None:
            print(show(out))
    return 0


def add_rescore(sub):
    p = sub.add_parser("rescore", help="compute metrics again from the saved outputs of finished cells (no sampling)")
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument("--tracking-uri", default=DEFAULT_URI)
    p.add_argument("--run", default=None, help="one cell run id (default: every finished cell run)")
    p.add_argument("--cache-dir", default=".strbench", help="where the run's generated mask sets are (cache_dir)")
    p.add_argument("--protocol", default=None, help="PSNR/SSIM protocol (default: the run's own)")
    p.set_defaults(func=_cmd_rescore)


def _cmd_rescore(a) -> int:
    from strbench.experiment.rescore import rescore

    rows = rescore(a.tracking_uri, a.experiment, run_id=a.run, cache_dir=a.cache_dir, protocol=a.protocol)
    worst = 0.0
    for r in rows:
        parts = []
        for k, v in r.again.items():
            logged = r.logged.get(k)
            d = None if logged is None else abs(v - logged)
            worst = max(worst, d or 0.0)
            parts.append(f"{k} {v:.4f} (logged {fmt(logged, '.4f')}, |diff| {fmt(d, '.1e')})")
        print(f"{r.label} [{r.run_id[:8]}] {r.n} outputs: " + "; ".join(parts + r.notes))
    print(f"{len(rows)} cell run(s) rescored from their saved outputs; largest |diff| from the logged value: {worst:.1e}")
    return 0
