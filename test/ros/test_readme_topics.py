# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""README "Running the node": its topic table equals what the node creates. The table is parsed;
the node (real rclpy, private Context, a depth source plugged in so every output exists, but
the rows of `pipeline.depth_source: multiview`, checked on a multiview node; the plugged-in
source must not create them) is asked through the ROS graph for its publishers and subscriptions
(names, types, reliability, durability) and through rclpy's own endpoint objects for history
depth (DDS discovery does not carry it)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from dvc_perception.pipeline.pipeline import Pipeline, make_keypoint_source
from dvc_perception.ros.perception_node import PerceptionNode

pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built here")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not built here")

pytestmark = pytest.mark.ros

README = Path(__file__).resolve().parents[2] / "README.md"
#: What rclpy and the lifecycle machinery publish on every node (listed under the table).
ROS_OWN = ("/rosout", "/parameter_events", "~/transition_event")
_QOS = re.compile(r"^(reliable|best effort), (volatile|transient local), keep last (\d+)")
#: The "when" of the outputs only multiview depth has (a single-image depth source has none).
MULTIVIEW = "`pipeline.depth_source: multiview`"


class _Plane:
    """A depth source (a plane at 2 m), so the node creates its depth outputs."""

    backend = "test:plane"

    def estimate(self, image_rgb: np.ndarray, K: np.ndarray) -> np.ndarray:
        return np.full(image_rgb.shape[:2], 2.0, np.float32)


def readme_topics() -> list[dict[str, str]]:
    """The rows of the README's topic table (keys: the header cells)."""
    text = README.read_text()
    section = text[text.index("## Running the node"):]
    section = section[:section.index("\n## ", 1)]
    lines = [line.strip() for line in section.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("| topic | direction"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells)))
    return rows


def _name(cell: str, node_name: str, object_id: str = "") -> str:
    topic = cell.strip("`").replace("<object_id>", object_id)
    return f"/{node_name}/{topic[2:]}" if topic.startswith("~/") else "/" + topic.lstrip("/")


def _graph(node, query, expected: int) -> dict[str, list[str]]:
    """`query(<node name>, "/")` as a dict, waiting (bounded) until `expected` entries exist."""
    deadline = time.monotonic() + 10.0
    while True:
        found = dict(query(node.get_name(), "/"))
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _check_qos(topic: str, cell: str, seen: QoSProfile, own: QoSProfile) -> None:
    """The README's QoS cell (reliability, durability, depth) against the endpoint as the
    graph reports it (`seen`) and the node's own profile (`own`, for the depth)."""
    qos = _QOS.match(cell)
    assert qos, f"{topic}: QoS cell {cell!r}"
    reliability = {"reliable": ReliabilityPolicy.RELIABLE,
                   "best effort": ReliabilityPolicy.BEST_EFFORT}[qos.group(1)]
    durability = {"volatile": DurabilityPolicy.VOLATILE,
                  "transient local": DurabilityPolicy.TRANSIENT_LOCAL}[qos.group(2)]
    assert seen.reliability == reliability, topic
    assert seen.durability == durability, topic
    assert own.depth == int(qos.group(3)), topic


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_readme_topic_table_matches_the_node(ctx, transport):
    # a name of its own: a node of another test (same name, another participant) can linger in
    # the DDS graph until its lease ends, and graph queries by name would find it
    name = f"readme_{transport}_node"
    node = PerceptionNode(
        name, context=ctx,
        pipeline_factory=lambda c: Pipeline(c, make_keypoint_source(c), _Plane()),
        parameter_overrides=[Parameter("torch_threads", value=0),
                             Parameter("image_transport", value=transport)],
    )
    try:
        assert not node.startup_error, node.startup_error
        rows = readme_topics()
        [object_id] = node.pipeline.object_ids
        outs = {_name(r["topic"], name, object_id): r for r in rows
                if r["direction"] == "out" and not r["when"].startswith(MULTIVIEW)}
        multiview_outs = [r for r in rows
                          if r["direction"] == "out" and r["when"].startswith(MULTIVIEW)]
        ins = {_name(r["topic"], name): r for r in rows if r["direction"] == "in"}
        ros_own = {_name(topic, name) for topic in ROS_OWN}
        assert len(outs) + len(multiview_outs) + len(ins) == len(rows), \
            "direction must be in or out"

        published = _graph(node, node.get_publisher_names_and_types_by_node,
                           len(outs) + len(ros_own))
        mine = {topic: types for topic, types in published.items() if topic not in ros_own}
        assert set(mine) == set(outs), published
        own_pubs = {p.topic_name: p for p in node.publishers}
        for topic, row in outs.items():
            assert mine[topic] == [row["type"].strip("`")], topic
            [endpoint] = [e for e in node.get_publishers_info_by_topic(topic)
                          if e.node_name == name]
            _check_qos(topic, row["QoS"], endpoint.qos_profile, own_pubs[topic].qos_profile)
            assert own_pubs[topic].qos_profile.history == HistoryPolicy.KEEP_LAST, topic

        expected_ins = {topic for topic, row in ins.items()
                        if row["when"] in ("always", f"`image_transport: {transport}`")}
        subscribed = _graph(node, node.get_subscriber_names_and_types_by_node, len(expected_ins))
        assert set(subscribed) == expected_ins
        for topic in expected_ins:
            assert subscribed[topic] == [ins[topic]["type"].strip("`")], topic
            [endpoint] = [e for e in node.get_subscriptions_info_by_topic(topic)
                          if e.node_name == name]
            assert endpoint.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
            assert ins[topic]["QoS"].startswith(("sensor data (best effort", "as `image`"))
    finally:
        node.destroy_node()


def test_readme_output_frame_inputs_match_the_node(ctx):
    """The rows the node subscribes to only with `output_frame`: names, types, full QoS."""
    name = "readme_output_frame_node"
    node = PerceptionNode(
        name, context=ctx,
        parameter_overrides=[Parameter("torch_threads", value=0),
                             Parameter("output_frame", value="base_link")],
    )
    try:
        assert not node.startup_error, node.startup_error
        rows = [r for r in readme_topics()
                if r["direction"] == "in" and r["when"].startswith("`output_frame` is set")]
        assert {r["topic"] for r in rows} == {"`/tf`", "`/tf_static`"}
        expected = 2 + len(rows)  # image, camera_info and these
        subscribed = _graph(node, node.get_subscriber_names_and_types_by_node, expected)
        own_subs = {s.topic_name: s for s in node.subscriptions}
        for row in rows:
            topic = _name(row["topic"], name)
            assert subscribed[topic] == [row["type"].strip("`")], topic
            [endpoint] = [e for e in node.get_subscriptions_info_by_topic(topic)
                          if e.node_name == name]
            _check_qos(topic, row["QoS"], endpoint.qos_profile, own_subs[topic].qos_profile)
    finally:
        node.destroy_node()


def test_readme_multiview_pose_input_matches_the_node(ctx):
    """The rows of multiview depth: the pose topic it subscribes (from a pose topic) and the
    depth confidence it publishes."""
    name = "readme_multiview_node"
    node = PerceptionNode(
        name, context=ctx,
        parameter_overrides=[Parameter("torch_threads", value=0),
                             Parameter("pipeline.depth_source", value="multiview")],
    )
    try:
        assert not node.startup_error, node.startup_error
        [row] = [r for r in readme_topics()
                 if r["direction"] == "in" and "pose_type: pose_stamped" in r["when"]]
        topic = _name(row["topic"], name)
        subscribed = _graph(node, node.get_subscriber_names_and_types_by_node, 3)
        assert subscribed[topic] == [row["type"].strip("`")]
        assert row["QoS"] == "as `image`"
        [endpoint] = [e for e in node.get_subscriptions_info_by_topic(topic)
                      if e.node_name == name]
        assert endpoint.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT

        outs = [r for r in readme_topics()
                if r["direction"] == "out" and r["when"].startswith(MULTIVIEW)]
        assert [r["topic"] for r in outs] == ["`~/depth/confidence`"]
        own_pubs = {p.topic_name: p for p in node.publishers}
        for row in outs:
            topic = _name(row["topic"], name)
            deadline = time.monotonic() + 10.0
            while topic not in (published := dict(node.get_publisher_names_and_types_by_node(
                    name, "/"))) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert published.get(topic) == [row["type"].strip("`")], (topic, published)
            [endpoint] = [e for e in node.get_publishers_info_by_topic(topic)
                          if e.node_name == name]
            _check_qos(topic, row["QoS"], endpoint.qos_profile, own_pubs[topic].qos_profile)
            depth = _name("`~/depth/image_raw`", name)
            assert own_pubs[topic].qos_profile == own_pubs[depth].qos_profile
    finally:
        node.destroy_node()
