# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import pytest

from dvc_perception.errors import ConfigError
from dvc_perception.ros.matcher import StampMatcher

S = 1_000_000_000  # ns per second
MS = 1_000_000


def test_exact_pairs_equal_stamps_only_in_either_arrival_order():
    m: StampMatcher[str, str] = StampMatcher("exact", queue_size=5)
    assert m.add_image(1 * S, "img1") == []
    assert m.add_camera_info(1 * S + 1, "info_off_by_1ns") == []
    assert m.add_camera_info(1 * S, "info1") == [("img1", "info1")]
    assert m.add_camera_info(2 * S, "info2") == []  # info first this time
    assert m.add_image(2 * S, "img2") == [("img2", "info2")]
    assert m.counters.matched == 2


def test_approximate_takes_closest_within_tolerance():
    m: StampMatcher[str, str] = StampMatcher("approximate", tolerance_s=0.005, queue_size=5)
    m.add_camera_info(100 * MS, "far")  # 10 ms away: outside
    m.add_camera_info(108 * MS, "near")  # 2 ms away
    m.add_camera_info(111 * MS, "nearer")  # 1 ms away
    assert m.add_image(110 * MS, "img") == [("img", "nearer")]
    assert m.add_image(300 * MS, "lonely") == []  # no info within 5 ms
    assert m.pending_images == 1
    assert m.add_camera_info(304 * MS, "late") == [("lonely", "late")]


def test_latest_uses_last_camera_info_and_releases_waiting_images():
    m: StampMatcher[str, str] = StampMatcher("latest", queue_size=3)
    assert m.add_image(1 * S, "a") == []  # no camera_info yet: waits
    assert m.add_camera_info(0, "latched") == [("a", "latched")]
    assert m.add_image(2 * S, "b") == [("b", "latched")]
    m.add_camera_info(2 * S + 5, "new")
    assert m.add_image(3 * S, "c") == [("c", "new")]


def test_queue_is_bounded_and_drops_are_counted_as_missing_camera_info():
    m: StampMatcher[int, str] = StampMatcher("exact", queue_size=3)
    for i in range(10):
        assert m.add_image(i * S // 10, i) == []
    assert m.pending_images == 3
    assert m.counters.no_camera_info == 7
    assert m.counters.unmatched_images == 0
    # once camera_info flows, images that never get one count as unmatched instead
    assert m.add_camera_info(9 * S // 10, "info") == [(9, "info")]
    assert m.counters.unmatched_images == 2  # images 7 and 8 were older than the match


def test_out_of_order_images_dropped_and_counted():
    m: StampMatcher[str, str] = StampMatcher("latest")
    m.add_camera_info(0, "info")
    assert m.add_image(5 * S, "t5") == [("t5", "info")]
    assert m.add_image(5 * S - 300 * MS, "older") == []  # 0.3 s back: out of order, no reset
    assert m.add_image(5 * S, "dup") == []  # same stamp again
    assert m.counters.out_of_order == 2
    assert m.counters.resets == 0
    assert m.add_image(6 * S, "t6") == [("t6", "info")]


def test_out_of_order_is_judged_on_arrival_even_while_waiting_for_camera_info():
    m: StampMatcher[str, str] = StampMatcher("exact")
    assert m.add_image(2 * S, "new") == []  # waits
    assert m.add_image(2 * S - 1, "older") == []  # arrives after a newer image: out of order
    assert m.counters.out_of_order == 1
    assert m.add_camera_info(2 * S - 1, "info_older") == []  # its image was never queued
    assert m.add_camera_info(2 * S, "info_new") == [("new", "info_new")]


def test_time_jump_back_over_1s_resets():
    m: StampMatcher[str, str] = StampMatcher("exact", queue_size=4)
    m.add_camera_info(100 * S, "i100")
    assert m.add_image(100 * S, "a") == [("a", "i100")]
    m.add_image(101 * S, "pending")  # waits for its camera_info
    # a looping bag starts again at t = 0
    assert m.add_image(0, "b") == []
    assert m.counters.resets == 1
    assert m.counters.out_of_order == 0
    assert m.counters.unmatched_images == 1  # "pending" was dropped by the reset, and counted
    assert m.pending_images == 1  # the queue was cleared, only "b" waits
    assert m.add_camera_info(0, "i0") == [("b", "i0")]


def test_one_topic_backlog_does_not_look_like_a_time_jump():
    """An executor may hand over all queued images before the camera_infos of the same frames."""
    m: StampMatcher[int, int] = StampMatcher("exact", queue_size=10)
    for i in range(5):
        assert m.add_image(i * S, i) == []  # 4 s of images first
    pairs = [p for i in range(5) for p in m.add_camera_info(i * S, 100 + i)]
    assert pairs == [(i, 100 + i) for i in range(5)]
    assert m.counters.resets == 0


def test_bad_settings_are_typed_errors():
    with pytest.raises(ConfigError, match="sync.mode"):
        StampMatcher("nearest")
    with pytest.raises(ConfigError, match="queue_size"):
        StampMatcher("exact", queue_size=0)
