"""`strbench bench gpu` (the prepared CUDA check) runs its whole code path on a CPU at 32 px."""
import math

from strbench.bench import BENCHES


def test_bench_gpu_runs_on_cpu():
    seen = []
    rows = BENCHES["gpu"](device="cpu", size=16, batch=1, repeats=1, on_row=seen.append)
    assert seen == rows  # each row as soon as it is measured (the CLI prints them)
    nets = [r for r in rows if "arch" in r]
    assert {(r["arch"], r["role"]) for r in nets} == {(a, r) for a in ("strbench", "authors")
                                                       for r in ("texture", "structure", "discriminator")}
    assert all(r["train_img_s"] > 0 and math.isfinite(r["sample_img_s"]) for r in nets)
    assert {r["channels_last"] for r in nets} == {False, True}
    ddp = rows[-1]
    assert ddp["check"].startswith("torchrun") and ddp["ok"], ddp
