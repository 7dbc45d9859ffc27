"""Peak memory of a benchmark's process, shared by the benchmarks that measure it. It
imports nothing but the standard library, so that the measured process loads nothing for
it (``fit_scale`` measures processes that must not import polars)."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MB.

    ``VmHWM`` where there is a /proc: ``ru_maxrss`` survives ``exec`` and starts from the
    parent's size at ``fork``, so a child of the process that just wrote the CSV (1.4 GB at
    20M rows) reported the parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
