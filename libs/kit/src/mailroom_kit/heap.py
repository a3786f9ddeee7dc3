"""The cyclic garbage collector's settings of a service process (issue 15).

CPython's collector traverses every tracked container object of a generation when it collects
it. A service's startup leaves ~130,000 of them (modules, the Litestar app and its routes,
settings, pools) that live as long as the process, and under load the requests and messages in
flight (waiting on Postgres or an ack) survive two young collections, so the oldest generation
kept growing and was collected about once a second, each time traversing the whole heap: in the
accept bench, 31 full collections took 3.2 s of the API's 18 s of CPU, and a pause of ~100 ms each
was the accept path's p99.

`freeze_startup_heap()`, once startup is done: collect what startup left as garbage, move every
survivor to the permanent generation (`gc.freeze()`: no collection traverses it again; they are
still freed if they ever become unreachable by reference count), and collect the young
generation after 10,000 net allocations instead of 700 (fewer, larger collections: the same
garbage found for less overhead) and the older ones less often. Cyclic garbage that outlives a
young collection waits longer to be freed; the bench's footprint (peak PSS of every process)
bounds what that costs.
"""

from __future__ import annotations

import gc

# (young: net allocations between collections; collections of the younger generation before
# the next one is collected, twice). CPython's defaults: (700, 10, 10).
GC_THRESHOLDS = (10_000, 20, 100)


def freeze_startup_heap() -> int:
    """Collect, freeze the survivors, set `GC_THRESHOLDS`; return how many objects are frozen."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return gc.get_freeze_count()
