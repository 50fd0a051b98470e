"""strbench: a benchmark suite reproducing StrDiffusion (CVPR 2024) with IR-SDE and RePaint* baselines."""

__version__ = "0.1.0"
