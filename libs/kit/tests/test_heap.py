"""`freeze_startup_heap`: what a service has built by the end of its startup is frozen out of the
cyclic collector's reach, and the collector's thresholds are the kit's."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from mailroom_kit.heap import GC_THRESHOLDS, freeze_startup_heap
from mailroom_kit.metrics import GC_FROZEN_OBJECTS


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_the_startup_heap_is_frozen_and_no_collection_traverses_it(restore_gc: None) -> None:
    gc.unfreeze()
    startup = [[n] for n in range(50_000)]  # long-lived containers (lists are always tracked)
    tracked = {id(o) for o in gc.get_objects()}
    assert all(id(o) in tracked for o in startup[:100])
    frozen = freeze_startup_heap()
    assert frozen == gc.get_freeze_count() >= len(startup)
    # Frozen objects are in no generation: a collection, full ones included, never walks them.
    tracked = {id(o) for o in gc.get_objects()}
    assert not any(id(o) in tracked for o in startup)
    assert gc.get_threshold() == GC_THRESHOLDS
    # The gauge an operator scrapes reads the same count.
    (metric,) = GC_FROZEN_OBJECTS.collect()
    assert metric.samples[0].value == gc.get_freeze_count() > 0


def test_startup_garbage_is_collected_before_the_freeze(restore_gc: None) -> None:
    gc.unfreeze()
    gc.collect()

    class Marker:
        pass

    cycle = [Marker()]
    cycle.append(cycle)  # type: ignore[arg-type]
    del cycle
    freeze_startup_heap()
    assert not any(isinstance(o, Marker) for o in gc.get_objects())
    gc.unfreeze()
    assert not any(isinstance(o, Marker) for o in gc.get_objects())  # freed, not frozen
