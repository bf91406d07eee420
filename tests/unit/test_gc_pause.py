"""The counted pause of the cyclic collector (shared.gc_pause)."""

from __future__ import annotations

import gc

from shared.gc_pause import cyclic_gc_paused


def test_the_collector_is_paused_while_any_fold_runs_and_resumed_after_the_last():
    assert gc.isenabled()
    with cyclic_gc_paused():
        assert not gc.isenabled()
        with cyclic_gc_paused():  # a second fold at once
            assert not gc.isenabled()
        assert not gc.isenabled()  # the first still runs
    assert gc.isenabled()
    gc.disable()  # paused by someone else: not resumed by a fold
    try:
        with cyclic_gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
