# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""rosbag2 files (mcap and sqlite3) through the `rosbags` library, with typed errors.

Reading yields raw CDR payloads, which `rclpy.serialization.deserialize_message` turns into the
same message objects a live subscription delivers: replay then runs the node's own conversion
code. Writing is atomic: the bag is written into a temporary sibling directory and renamed into
place only when complete, so a failed run never leaves a partial bag behind.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

from dvc_perception.bag.interfaces import add_vendored_types
from dvc_perception.errors import BagError

STORAGES = ("mcap", "sqlite3")
IMAGE_TYPE = "sensor_msgs/msg/Image"
#: Messages of an Image topic peeked at for its encoding (the first readable one counts).
PEEK_MESSAGES = 8


@dataclass(frozen=True)
class TopicInfo:
    """A topic in a bag: its ROS type (``sensor_msgs/msg/Image``) and message count.

    ``encoding`` is, for ``sensor_msgs/msg/Image`` topics read from a bag, the encoding of the
    first readable message (``rgb8``, ``32FC1``, ...); empty when unknown or not an Image.
    """

    name: str
    msgtype: str
    count: int
    encoding: str = ""


@dataclass(frozen=True)
class BagMessage:
    """One recorded message: topic, type, receive time [ns] and the raw CDR payload."""

    topic: str
    msgtype: str
    timestamp_ns: int
    rawdata: bytes


def _typestore() -> Any:
    """The Kilted store of rosbags plus the vendored interfaces (vision_msgs) it lacks."""
    from rosbags.typesys import Stores, get_typestore

    return add_vendored_types(get_typestore(Stores.ROS2_KILTED))


class BagReader:
    """Read a rosbag2 directory (or a single ``.mcap`` / ``.db3`` file).

    Use as a context manager. Raises `BagError` for a missing path, a file that is not a bag,
    a truncated or corrupt bag, or an empty bag.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        self._reader: Any = None
        self._topics: dict[str, TopicInfo] | None = None

    def __enter__(self) -> BagReader:
        from rosbags.highlevel import AnyReader

        try:
            self._reader = AnyReader([self.path], default_typestore=_typestore())
            self._reader.open()
        except Exception as err:  # rosbags raises several unrelated types for bad files
            raise BagError(
                f"cannot open {self.path} as a rosbag2 (mcap or sqlite3): {err}"
            ) from err
        if not self._reader.connections:
            self._reader.close()
            raise BagError(f"bag {self.path} is empty: it has no topics")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._topics = None

    @property
    def storage(self) -> str:
        """``mcap`` or ``sqlite3``, from the files in the bag."""
        files = [self.path] if self.path.is_file() else list(self.path.iterdir())
        if any(f.suffix == ".mcap" for f in files):
            return "mcap"
        return "sqlite3"

    def topics(self) -> dict[str, TopicInfo]:
        """Every topic in the bag, by name (Image topics with their encoding)."""
        self._require_open()
        if self._topics is None:
            counts: dict[str, tuple[str, int]] = {}
            for conn in self._reader.connections:
                prev = counts.get(conn.topic, (conn.msgtype, 0))
                counts[conn.topic] = (conn.msgtype, prev[1] + conn.msgcount)
            self._topics = {
                name: TopicInfo(name, msgtype, count, self._peek_encoding(name, msgtype))
                for name, (msgtype, count) in counts.items()
            }
        return dict(self._topics)

    def _peek_encoding(self, topic: str, msgtype: str) -> str:
        """Encoding of the first readable message of an Image `topic` ('' if none or not one)."""
        if msgtype != IMAGE_TYPE:
            return ""
        conns = [c for c in self._reader.connections if c.topic == topic]
        typestore = _typestore()
        try:
            with closing(self._reader.messages(connections=conns)) as it:
                for _, _, raw in islice(it, PEEK_MESSAGES):
                    try:
                        return str(typestore.deserialize_cdr(bytes(raw), IMAGE_TYPE).encoding)
                    except Exception:  # noqa: BLE001 - garbage payload: try the next one
                        continue
        except Exception:  # noqa: BLE001 - a corrupt bag: `messages` reports it when read
            return ""
        return ""

    def messages(self, topics: Iterable[str]) -> Iterator[BagMessage]:
        """Messages of `topics` in recorded order.

        Raises:
            BagError: a topic is not in the bag, or the bag is truncated or corrupt mid-way.
        """
        self._require_open()
        wanted = list(topics)
        known = self.topics()
        missing = [t for t in wanted if t not in known]
        if missing:
            raise BagError(f"bag {self.path} has no topic(s) {missing}; it has {sorted(known)}")
        conns = [c for c in self._reader.connections if c.topic in wanted]
        try:
            for conn, timestamp, raw in self._reader.messages(connections=conns):
                yield BagMessage(conn.topic, conn.msgtype, int(timestamp), bytes(raw))
        except BagError:
            raise
        except Exception as err:
            raise BagError(f"bag {self.path} is truncated or corrupt: {err}") from err

    def _require_open(self) -> None:
        if self._reader is None:
            raise BagError("BagReader must be used as a context manager (`with BagReader(p)`)")


def deserialize(
    message: BagMessage, cls: type, index: int | None = None, bag: str | Path | None = None
) -> Any:
    """The rclpy message `cls` (e.g. ``sensor_msgs.msg.Image``) in `message`'s CDR payload.

    Args:
        message: a message read from a bag.
        cls: the rclpy message class of its topic.
        index: the message's index on its topic, named in the error when given.
        bag: the bag it was read from, named in the error when given.

    Raises:
        BagError: the payload is not a valid CDR `cls` (naming topic, index and record time).
    """
    from rclpy.serialization import deserialize_message

    try:
        return deserialize_message(message.rawdata, cls)
    except Exception as err:  # rclpy raises RMWError (not importable as a public name)
        where = (f"bag {bag}: " if bag is not None else "") + (
            f"message {index}" if index is not None else "a message")
        raise BagError(
            f"{where} on {message.topic} (record time {message.timestamp_ns} ns, "
            f"{len(message.rawdata)} bytes) is not a valid {message.msgtype}: "
            f"{' '.join(str(err).split())}"
        ) from err


def find_topics_by_type(topics: dict[str, TopicInfo], msgtype: str) -> list[str]:
    """Names of the topics whose type is `msgtype` (e.g. ``sensor_msgs/msg/CameraInfo``)."""
    return sorted(name for name, info in topics.items() if info.msgtype == msgtype)


class AtomicBagWriter:
    """Write a rosbag2 atomically: into a hidden temporary sibling, renamed on success.

    Args:
        path: the bag directory to create; it must not exist (pass ``overwrite=True`` to
            replace it, which happens only once the new bag is complete).
        storage: ``mcap`` (default) or ``sqlite3``.
    """

    def __init__(
        self, path: str | Path, storage: str = "mcap", *, overwrite: bool = False
    ) -> None:
        if storage not in STORAGES:
            raise BagError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise BagError(f"output bag {self.path} already exists (use overwrite)")
        self.storage = storage
        self._tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self._writer: Any = None
        self._typestore = _typestore()
        self._connections: dict[str, Any] = {}
        self._overwrite = overwrite

    def __enter__(self) -> AtomicBagWriter:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        parent = self.path.parent
        if parent.exists() and not parent.is_dir():
            raise BagError(f"cannot write output bag {self.path}: {parent} is not a directory")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._writer = Writer(self._tmp, version=9, storage_plugin=plugin)
            self._writer.open()
        except Exception as err:  # OSError, or rosbags' WriterError wrapping one
            self._writer = None
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise self._write_error(err) from err
        return self

    def _write_error(self, err: BaseException) -> BagError:
        """`BagError` naming the output bag and the OS's reason."""
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        name = str(err.filename) if isinstance(err, OSError) and err.filename else ""
        where = f" ({name})" if name and self._tmp.name not in name else ""
        return BagError(f"cannot write output bag {self.path}: {reason}{where}")

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare `topic` with ROS type `msgtype` (``sensor_msgs/msg/Image``)."""
        if topic in self._connections:
            return
        try:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self._typestore
            )
        except Exception as err:
            raise BagError(f"cannot add topic {topic} of type {msgtype!r}: {err}") from err

    def write_raw(self, topic: str, msgtype: str, timestamp_ns: int, rawdata: bytes) -> None:
        """Write one CDR-serialized message (declares the topic on first use)."""
        self.add_topic(topic, msgtype)
        try:
            self._writer.write(self._connections[topic], int(timestamp_ns), rawdata)
        except OSError as err:  # e.g. the disk is full
            raise self._write_error(err) from err

    def write_message(self, topic: str, msg: Any, timestamp_ns: int) -> None:
        """Write an rclpy message object, serialized with rclpy's own serializer."""
        from rclpy.serialization import serialize_message

        self.write_raw(topic, ros_type_name(msg), timestamp_ns, serialize_message(msg))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except OSError as err:
            if exc_type is None:  # otherwise the exception in the block propagates
                shutil.rmtree(self._tmp, ignore_errors=True)
                raise self._write_error(err) from err
        finally:
            self._writer = None
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        try:
            if self.path.exists():
                shutil.rmtree(self.path)
            self._tmp.rename(self.path)
            # rosbags names the storage file after the temporary directory: rename it to match,
            # and rewrite metadata.yaml, so the bag looks as `ros2 bag record` would write it.
            _rename_storage_files(self.path, self._tmp.name)
        except OSError as err:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise self._write_error(err) from err


def _rename_storage_files(bag_dir: Path, tmp_name: str) -> None:
    meta = bag_dir / "metadata.yaml"
    text = meta.read_text()
    for f in sorted(bag_dir.iterdir()):
        if f.name.startswith(tmp_name):
            new = bag_dir / (bag_dir.name + f.name[len(tmp_name) :])
            f.rename(new)
            text = text.replace(f.name, new.name)
    meta.write_text(text)


def ros_type_name(msg: Any) -> str:
    """``pkg/msg/Type`` of an rclpy message object (e.g. ``sensor_msgs/msg/Image``)."""
    module = type(msg).__module__.split(".")  # sensor_msgs.msg._image
    return f"{module[0]}/msg/{type(msg).__name__}"
