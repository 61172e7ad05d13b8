"""The search tries many systems that fail, and reads each failure from its result (a status, a residual),
not from the console: the numerical libraries' warnings about them are kept from the user's screen."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_scipy() -> Iterator[None]:
    """UserWarnings silenced around one call into scipy (LSODA's convergence failures, FITPACK's unmet
    smoothing condition; FITPACK's are attributed to its caller, so the filter cannot name scipy).
    ``warnings.catch_warnings`` swaps the process's filters: two fits in threads may leave this filter on
    or off for a while, which changes what the console shows and nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
