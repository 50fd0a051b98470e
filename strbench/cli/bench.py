"""`strbench bench` (overhead benchmarks) and `strbench rescore` (metrics again from saved outputs)."""
from __future__ import annotations

from strbench.cli.console import fmt
from strbench.contract import DEFAULT_URI


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
    from strbench import bench

    return bench.bench_command(a.what, device=a.device, size=a.size, batch=a.batch, preset=a.preset,
                               repeats=a.repeats)


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
        print(f"{r.label} [{r.run_id[:8]}] {r.n} outputs: " + "; ".join(parts))
    print(f"{len(rows)} cell run(s) rescored from their saved outputs; largest |diff| from the logged value: {worst:.1e}")
    return 0
