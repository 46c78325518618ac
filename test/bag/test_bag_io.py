# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

from pathlib import Path

import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image

from dvc_perception.bag.io import AtomicBagWriter, BagReader, find_topics_by_type
from dvc_perception.errors import BagError


def _image(i: int) -> Image:
    msg = Image()
    msg.header.stamp.sec = i
    msg.header.stamp.nanosec = 123
    msg.header.frame_id = "camera_optical"
    msg.height, msg.width, msg.encoding, msg.step = 2, 3, "rgb8", 9
    msg.data = bytes((i + k) % 256 for k in range(18))
    return msg


def _write(path: Path, storage: str, n: int = 5) -> list[Image]:
    sent = [_image(i) for i in range(n)]
    with AtomicBagWriter(path, storage) as writer:
        for i, msg in enumerate(sent):
            writer.write_message("/camera/image_raw", msg, (i + 1) * 10**8)
            writer.write_message(
                "/camera/camera_info", CameraInfo(header=msg.header), (i + 1) * 10**8
            )
    return sent


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_decodes_to_the_messages_written(tmp_path: Path, storage: str) -> None:
    sent = _write(tmp_path / "bag", storage)
    with BagReader(tmp_path / "bag") as reader:
        assert reader.storage == storage
        topics = reader.topics()
        assert topics["/camera/image_raw"].count == len(sent)
        assert find_topics_by_type(topics, "sensor_msgs/msg/CameraInfo") == ["/camera/camera_info"]
        got = [
            deserialize_message(m.rawdata, Image) for m in reader.messages(["/camera/image_raw"])
        ]
    assert got == sent  # decoded messages, never raw CDR (rclpy leaves padding uninitialised)
    assert sorted(p.name for p in (tmp_path / "bag").iterdir())[0].startswith("bag.")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary dir left"


def test_writer_leaves_nothing_when_the_run_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with AtomicBagWriter(tmp_path / "out") as writer:
            writer.write_message("/x", _image(0), 1)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_to_clobber_and_unknown_storage(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(BagError, match="already exists"):
        AtomicBagWriter(tmp_path / "out")
    with pytest.raises(BagError, match="storage must be one of"):
        AtomicBagWriter(tmp_path / "other", "rosbag1")


def test_missing_and_not_a_bag(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "nope")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "junk.mcap").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(BagError, match="cannot open"):
        with BagReader(junk):
            pass


def test_missing_topic_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "bag", "mcap", n=1)
    with BagReader(tmp_path / "bag") as reader:
        with pytest.raises(BagError, match="/camera/depth"):
            list(reader.messages(["/camera/depth"]))


def test_empty_bag(tmp_path: Path) -> None:
    with AtomicBagWriter(tmp_path / "empty", "mcap"):
        pass
    with pytest.raises(BagError, match="empty|cannot open"):
        with BagReader(tmp_path / "empty"):
            pass


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_a_clear_error(tmp_path: Path, storage: str) -> None:
    _write(tmp_path / "bag", storage, n=20)
    data_file = next(p for p in (tmp_path / "bag").iterdir() if p.suffix in (".mcap", ".db3"))
    raw = data_file.read_bytes()
    data_file.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BagError, match="truncated|corrupt|cannot open"):
        with BagReader(tmp_path / "bag") as reader:
            for _ in reader.messages(["/camera/image_raw"]):
                pass
