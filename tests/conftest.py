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
