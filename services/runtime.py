"""Process-wide runtime settings for the long-running servers (API, JT/T 808 gateway).

Called by their command-line entry points and by the benchmarks that measure them; library code
never changes process-wide state on its own.
"""

from __future__ import annotations

import gc

GC_YOUNG_THRESHOLD = 50_000


def tune_gc(threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Fewer, cheaper cyclic garbage collections for a server that allocates per request/frame.

    Every request or frame allocates short-lived containers that reference counting frees at
    once; with CPython's default young threshold (700) the cyclic collector still runs every
    few hundred allocations, and objects briefly in flight get promoted until full collections
    walk every connection's objects again and again (measured at about a third of the
    gateway's time with 10,000 connections). A larger young threshold makes collections rare
    and cheap (young generations are mostly dead), and freezing what exists at start-up
    (modules, settings, models) keeps it out of every later full collection.
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)
