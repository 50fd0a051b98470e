"""Fixtures shared by the test modules (plain helper functions are in ``helpers.py``).

``one_thread``: torch single-threaded for a whole module, restored afterwards. It is opt-in, per module:
``pytestmark = pytest.mark.usefixtures("one_thread")``. Tiny tensors gain nothing from threads, and on a
shared 2-core machine OpenMP spinning makes 2 threads several times slower than 1; modules that do not ask
for it keep torch's default thread count (their numbers and timings are unchanged).
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """torch.set_num_threads(1) for the module that uses it (restored after its last test)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def empty_torch_hub_cache(tmp_path_factory):
    """LPIPS looks for its backbone in torch.hub's cache ($TORCH_HOME/hub/checkpoints): the suite runs with an
    empty one (and no STRBENCH_LPIPS_WEIGHTS), so no result depends on what a machine has cached; tests that need
    a backbone bring a fixture file (tests/test_lpips.py). Set in os.environ so subprocesses see it too."""
    import os

    keys = ("TORCH_HOME", "STRBENCH_LPIPS_WEIGHTS")
    old = {k: os.environ.get(k) for k in keys}
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    os.environ.pop("STRBENCH_LPIPS_WEIGHTS", None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
