# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""A worker thread fed by a bounded keep-latest queue, so subscription callbacks never block.

When the queue is full the *oldest* waiting item is dropped (the newest frame is the one worth
processing) and counted. ROS-free.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from dvc_perception.errors import ConfigError

T = TypeVar("T")


class KeepLatestWorker(Generic[T]):
    """Runs `handler(item)` on one daemon thread for submitted items.

    Args:
        handler: called for each item on the worker thread; an exception it raises is passed to
            `on_error` and the worker goes on.
        maxsize: items waiting at most; when full the oldest is dropped (`dropped` counts them).
        on_error: called with the exception of a failing handler (on the worker thread).
        name: thread name.
    """

    def __init__(
        self,
        handler: Callable[[T], None],
        maxsize: int = 1,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "dvc-perception-worker",
    ) -> None:
        if maxsize < 1:
            raise ConfigError(f"worker_queue_size: expected >= 1, got {maxsize}")
        self._handler = handler
        self._on_error = on_error
        self._maxsize = maxsize
        self._queue: deque[T] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._name = name
        self.dropped = 0
        self.processed = 0
        self.failed = 0
        self.skipped = 0
        self._in_progress = False

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (a no-op when it runs already)."""
        if self.running:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Queue `item`; returns False when an older item had to be dropped to make room."""
        with self._cond:
            kept_all = True
            while len(self._queue) >= self._maxsize:
                self._queue.popleft()
                self.dropped += 1
                kept_all = False
            self._queue.append(item)
            self._cond.notify()
        return kept_all

    def submit_if_idle(self, item: T) -> bool:
        """Queue `item` only when nothing is waiting or in progress.

        For a slow handler whose inputs are worth nothing late: otherwise the item is counted
        in `skipped` and False returned.
        """
        with self._cond:
            if self._queue or self._in_progress:
                self.skipped += 1
                return False
            self._queue.append(item)
            self._cond.notify()
        return True

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop after the item in progress; waiting items are dropped (and counted).

        Returns:
            True when the thread ended within `timeout_s`.
        """
        with self._cond:
            self._stopping = True
            self.dropped += len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                item = self._queue.popleft()
                self._in_progress = True
            try:
                self._handler(item)
                self.processed += 1
            except Exception as err:  # noqa: BLE001 - a failing frame must not end the worker
                self.failed += 1
                if self._on_error is not None:
                    self._on_error(err)
            finally:
                with self._cond:
                    self._in_progress = False
