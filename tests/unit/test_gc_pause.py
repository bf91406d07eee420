"""The counted pause of the cyclic collector (shared.gc_pause)."""

from __future__ import annotations

import gc
import threading

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


def test_pauses_from_threads_at_once_resume_the_collector_once_the_last_ends():
    inside, release = threading.Barrier(5), threading.Event()
    raised: list[BaseException] = []

    def pause(fail: bool) -> None:
        try:
            with cyclic_gc_paused():
                inside.wait(timeout=10)
                release.wait(timeout=10)
                if fail:
                    raise RuntimeError("a fold fails")
        except RuntimeError as exc:
            raised.append(exc)

    threads = [threading.Thread(target=pause, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    inside.wait(timeout=10)  # all four are paused
    assert not gc.isenabled()
    release.set()
    for t in threads:
        t.join(timeout=10)
    assert len(raised) == 2
    assert gc.isenabled()  # the failed ones gave their pause back too
