"""Process settings for millisecond code paths: one BLAS thread, and the cyclic GC paused.

Two effects dominated the greedy path's wall time when it was profiled on a busy two-core
machine (10,000 x 12 window):

* **Threaded BLAS on small products.** OpenBLAS splits even a product of a few dozen prices
  by a ``(D, C * R)`` matrix over its threads; when the other core is busy the split waits for
  it, and one such product took 8 ms instead of 0.2 ms. (The dual no longer forms that matrix,
  but the fast path still makes a few small BLAS calls.)
* **Full garbage collections.** Copying a ``(10,000, 13)`` array into nested Python lists (the
  local search reads them element by element) allocates 10,000 lists, which can trigger a full
  collection that walks every object of the process (a loaded instance holds hundreds of
  thousands): 100-140 ms instead of 3.5 ms. The fast path creates no reference cycles, so
  reference counting frees everything it allocates; collections only resume afterwards.

Both settings are process-wide while the block runs, and restored afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any


@cache
def _blas_controller() -> Any:
    # Built once: inspecting the loaded libraries costs ~1.5 ms, a limit from it ~0.02 ms.
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within the block, numpy's BLAS runs on one thread."""
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


@contextmanager
def gc_paused() -> Iterator[None]:
    """Within the block, no cyclic garbage collection starts (it resumes afterwards if it was
    enabled)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def hot_path() -> Iterator[None]:
    """:func:`one_blas_thread` and :func:`gc_paused` together, for millisecond solves."""
    with one_blas_thread(), gc_paused():
        yield
