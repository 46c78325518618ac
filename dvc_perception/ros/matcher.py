# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Matching `image` and `camera_info` messages by header stamp (message_filters is not on PyPI).

Modes: ``exact`` (equal stamps), ``approximate`` (closest stamp within a tolerance) and ``latest``
(every image takes the most recent camera_info, for drivers that latch it). Each topic has a
bounded queue; what falls out of it is counted, never silent. A jump backwards in time by more than
`time_jump_reset_s` (a looping bag, a `use_sim_time` restart) clears the matcher; smaller
backwards steps of images are dropped as out of order. Jumps are judged per topic (images against
images, camera_info against camera_info): an executor may deliver one topic's backlog before the
other's. Stamps are integer nanoseconds, so equal
stamps compare exactly. ROS-free: payloads are opaque.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from dvc_perception.config import SYNC_MODES
from dvc_perception.errors import ConfigError

ImageT = TypeVar("ImageT")
InfoT = TypeVar("InfoT")


@dataclass
class MatchCounters:
    """What the matcher did since it was created (resets do not clear these)."""

    matched: int = 0
    unmatched_images: int = 0  # images that fell out of the queue with no partner
    no_camera_info: int = 0  # images dropped because no camera_info had arrived at all
    unmatched_infos: int = 0
    out_of_order: int = 0  # images older than (or as old as) the last matched image
    resets: int = 0


class StampMatcher(Generic[ImageT, InfoT]):
    """Pairs images with camera_info by stamp.

    Args:
        mode: ``exact``, ``approximate`` or ``latest``.
        tolerance_s: approximate mode: the largest stamp difference [s].
        queue_size: messages kept per topic while waiting for a partner.
        time_jump_reset_s: a stamp this much older than the newest seen clears the matcher [s].
    """

    def __init__(
        self,
        mode: str,
        tolerance_s: float = 0.005,
        queue_size: int = 10,
        time_jump_reset_s: float = 1.0,
    ) -> None:
        if mode not in SYNC_MODES:
            raise ConfigError(f"sync.mode: expected one of {list(SYNC_MODES)}, got {mode!r}")
        if queue_size < 1:
            raise ConfigError(f"sync.queue_size: expected >= 1, got {queue_size}")
        if tolerance_s < 0.0:
            raise ConfigError(f"sync.tolerance_s: expected >= 0, got {tolerance_s}")
        self.mode = mode
        self.tolerance_ns = 0 if mode == "exact" else int(round(tolerance_s * 1e9))
        self.queue_size = queue_size
        self.time_jump_reset_ns = int(round(time_jump_reset_s * 1e9))
        self.counters = MatchCounters()
        self._images: deque[tuple[int, ImageT]] = deque()
        self._infos: deque[tuple[int, InfoT]] = deque()
        self._latest_info: tuple[int, InfoT] | None = None
        self._newest_ns: dict[str, int] = {}
        self._any_info = False

    def reset(self) -> None:
        """Forget every queued message and stamp (counted in `counters.resets`).

        Images still waiting are counted as dropped (never silent).
        """
        self._count_dropped_images(len(self._images))
        self._images.clear()
        self._infos.clear()
        self._latest_info = None
        self._newest_ns = {}
        self.counters.resets += 1

    @property
    def pending_images(self) -> int:
        """Images waiting for a camera_info."""
        return len(self._images)

    def _observe(self, topic: str, stamp_ns: int) -> int | None:
        """Reset on a large backwards jump of `topic`'s stamps; track its newest stamp.

        Returns:
            The newest stamp of `topic` seen before this one (None: first, or just reset).
        """
        newest = self._newest_ns.get(topic)
        if newest is not None and stamp_ns < newest - self.time_jump_reset_ns:
            self.reset()
            newest = None
        if newest is None or stamp_ns > newest:
            self._newest_ns[topic] = stamp_ns
        return newest

    def add_image(self, stamp_ns: int, image: ImageT) -> list[tuple[ImageT, InfoT]]:
        """Offer an image; returns the (image, camera_info) pairs now complete, oldest first."""
        newest = self._observe("image", stamp_ns)
        if newest is not None and stamp_ns <= newest:
            # older than (or as old as) an image already seen, matched or still waiting
            self.counters.out_of_order += 1
            return []
        if self.mode == "latest":
            if self._latest_info is not None:
                return self._emit([(stamp_ns, image, self._latest_info[1])])
            self._push_image(stamp_ns, image)
            return []
        best = self._closest(self._infos, stamp_ns)
        if best is None:
            self._push_image(stamp_ns, image)
            return []
        info_ns, info = self._infos[best]
        # infos older than the partner can only pair with images already out of order: drop them
        for _ in range(best + 1):
            self._infos.popleft()
        self.counters.unmatched_infos += best
        self._drop_images_older_than(stamp_ns)
        return self._emit([(stamp_ns, image, info)])

    def add_camera_info(self, stamp_ns: int, info: InfoT) -> list[tuple[ImageT, InfoT]]:
        """Offer a camera_info; returns the pairs now complete, oldest first."""
        self._observe("camera_info", stamp_ns)
        self._any_info = True
        if self.mode == "latest":
            self._latest_info = (stamp_ns, info)
            pending = [(s, img, info) for s, img in self._images]
            self._images.clear()
            return self._emit(pending)
        best = self._closest(self._images, stamp_ns)
        if best is None:
            self._infos.append((stamp_ns, info))
            while len(self._infos) > self.queue_size:
                self._infos.popleft()
                self.counters.unmatched_infos += 1
            return []
        image_ns, image = self._images[best]
        for _ in range(best + 1):
            self._images.popleft()
        self._count_dropped_images(best)
        return self._emit([(image_ns, image, info)])

    def _closest(self, queue: deque[tuple[int, object]], stamp_ns: int) -> int | None:
        """Index of the queued stamp closest to `stamp_ns` within tolerance; None if none."""
        best, best_dt = None, None
        for i, (s, _msg) in enumerate(queue):
            dt = abs(s - stamp_ns)
            if dt <= self.tolerance_ns and (best_dt is None or dt < best_dt):
                best, best_dt = i, dt
        return best

    def _push_image(self, stamp_ns: int, image: ImageT) -> None:
        self._images.append((stamp_ns, image))
        while len(self._images) > self.queue_size:
            self._images.popleft()
            self._count_dropped_images(1)

    def _drop_images_older_than(self, stamp_ns: int) -> None:
        n = 0
        while self._images and self._images[0][0] < stamp_ns:
            self._images.popleft()
            n += 1
        self._count_dropped_images(n)

    def _count_dropped_images(self, n: int) -> None:
        if self._any_info:
            self.counters.unmatched_images += n
        else:
            self.counters.no_camera_info += n

    def _emit(self, triples: list[tuple[int, ImageT, InfoT]]) -> list[tuple[ImageT, InfoT]]:
        triples.sort(key=lambda x: x[0])
        self.counters.matched += len(triples)
        return [(img, info) for _s, img, info in triples]
