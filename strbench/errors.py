"""User-facing errors: each prints as one line naming the file/key and the fix, exit code 2."""
from __future__ import annotations


class StrbenchError(Exception):
    """Base class: the CLI prints the message on one line and exits with code 2."""


class ConfigError(StrbenchError, ValueError):
    """Bad experiment config: unknown key, wrong type, out-of-range value (message names the key path)."""


class DataError(StrbenchError, ValueError):
    """Missing/empty folder, unreadable image, mask/image size mismatch."""


class WeightsError(StrbenchError):
    """A weights file needed offline is missing or has the wrong checksum."""


class CheckpointError(StrbenchError):
    """A checkpoint does not match the config that asks for it, or is unreadable."""


class TrainingDiverged(StrbenchError, FloatingPointError):
    """A NaN/Inf loss stopped training; the last good checkpoint is left intact."""
