# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import threading
import time

from dvc_perception.ros.worker import KeepLatestWorker


def test_keep_latest_drops_oldest_and_counts():
    gate = threading.Event()
    seen: list[int] = []

    def handler(item: int) -> None:
        gate.wait(5.0)
        seen.append(item)

    w: KeepLatestWorker[int] = KeepLatestWorker(handler, maxsize=1)
    w.start()
    w.submit(0)
    deadline = time.monotonic() + 5.0
    while w._queue and time.monotonic() < deadline:  # item 0 taken by the thread
        time.sleep(0.005)
    for i in range(1, 6):
        w.submit(i)  # 1..4 are replaced by their successor while 0 is being handled
    gate.set()
    deadline = time.monotonic() + 5.0
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert seen == [0, 5]
    assert w.dropped == 4
    assert w.stop(2.0)


def test_handler_errors_are_reported_and_worker_continues():
    errors: list[BaseException] = []
    done = threading.Event()

    def handler(item: int) -> None:
        if item == 0:
            raise ValueError("bad frame")
        done.set()

    w: KeepLatestWorker[int] = KeepLatestWorker(handler, maxsize=4, on_error=errors.append)
    w.start()
    w.submit(0)
    w.submit(1)
    assert done.wait(5.0)
    assert [str(e) for e in errors] == ["bad frame"]
    assert w.failed == 1 and w.processed == 1
    assert w.stop(2.0)


def test_stop_within_2s_while_idle_and_counts_waiting_items():
    gate = threading.Event()
    w: KeepLatestWorker[int] = KeepLatestWorker(lambda item: gate.wait(0.5), maxsize=3)
    w.start()
    for i in range(3):
        w.submit(i)
    t0 = time.monotonic()
    assert w.stop(2.0)
    assert time.monotonic() - t0 < 2.0
    assert not w.running
    assert w.dropped >= 2  # the items still waiting are counted, not lost silently
