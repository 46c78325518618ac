# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""vision_msgs/Detection3DArray and tf2_msgs/TFMessage work end to end: generated from the
vendored definitions (tools/build_interfaces.sh) in the wheel environment, from rosdep on a
robot. Checked in a fresh process (no environment set by hand), over real middleware, and in
bags written and read with rosbags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

# RIHS01 type hashes of the upstream definitions (vision_msgs 4.x, tf2_msgs of Humble and later).
# A robot's nodes match endpoints by these: a vendored copy that drifts from upstream changes them.
HASHES = {
    "vision_msgs/msg/Detection3DArray":
        "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "tf2_msgs/msg/TFMessage":
        "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
}

# What the probe fills in, and what must come back out (JSON-friendly on purpose).
SPEC = {
    "frame_id": "camera_optical",
    "stamp": [1712, 250_000_000],
    "detections": [
        {"id": "0", "class_id": "lmo_obj_05", "score": 0.875,
         "position": [0.1, -0.2, 0.75], "orientation": [0.0, 0.0, 0.7071067811865476,
                                                        0.7071067811865476],
         "covariance_diag": 0.01, "size": [0.1, 0.18, 0.09]},
        {"id": "1", "class_id": "lmo_obj_12", "score": 0.5,
         "position": [-0.3, 0.05, 1.25], "orientation": [1.0, 0.0, 0.0, 0.0],
         "covariance_diag": 0.04, "size": [0.06, 0.07, 0.2]},
    ],
    "transforms": [
        {"parent": "camera_optical", "child": "lmo_obj_05",
         "translation": [0.1, -0.2, 0.75], "rotation": [0.0, 0.0, 0.7071067811865476,
                                                         0.7071067811865476]},
    ],
}

# Runs in a fresh interpreter: builds both messages from SPEC, round-trips them through
# rclpy.serialization, publishes them between two nodes of one private Context and reports what
# arrived (read back field by field), plus the type hash each publisher announces.
PROBE = r"""
import json, sys, time
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message, serialize_message
from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TFMessage
import vision_msgs
from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

spec = json.loads(sys.argv[1])


def detections():
    msg = Detection3DArray()
    msg.header.frame_id = spec["frame_id"]
    msg.header.stamp.sec, msg.header.stamp.nanosec = spec["stamp"]
    for d in spec["detections"]:
        det = Detection3D(header=msg.header, id=d["id"])
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = d["class_id"], d["score"]
        p, q = hyp.pose.pose.position, hyp.pose.pose.orientation
        p.x, p.y, p.z = d["position"]
        q.x, q.y, q.z, q.w = d["orientation"]
        cov = [0.0] * 36
        for i in range(6):
            cov[7 * i] = d["covariance_diag"]
        hyp.pose.covariance = cov
        det.results.append(hyp)
        det.bbox.center = hyp.pose.pose
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = d["size"]
        msg.detections.append(det)
    return msg


def transforms():
    msg = TFMessage()
    for t in spec["transforms"]:
        tf = TransformStamped()
        tf.header.frame_id, tf.child_frame_id = t["parent"], t["child"]
        tf.header.stamp.sec, tf.header.stamp.nanosec = spec["stamp"]
        tr, rot = tf.transform.translation, tf.transform.rotation
        tr.x, tr.y, tr.z = t["translation"]
        rot.x, rot.y, rot.z, rot.w = t["rotation"]
        msg.transforms.append(tf)
    return msg


def read_detections(msg):
    return {
        "frame_id": msg.header.frame_id,
        "stamp": [msg.header.stamp.sec, msg.header.stamp.nanosec],
        "detections": [
            {"id": d.id, "class_id": d.results[0].hypothesis.class_id,
             "score": d.results[0].hypothesis.score,
             "position": [d.results[0].pose.pose.position.x, d.results[0].pose.pose.position.y,
                          d.results[0].pose.pose.position.z],
             "orientation": [d.bbox.center.orientation.x, d.bbox.center.orientation.y,
                             d.bbox.center.orientation.z, d.bbox.center.orientation.w],
             "covariance_diag": d.results[0].pose.covariance[35],
             "size": [d.bbox.size.x, d.bbox.size.y, d.bbox.size.z]}
            for d in msg.detections
        ],
    }


def read_transforms(msg):
    return [
        {"parent": t.header.frame_id, "child": t.child_frame_id,
         "translation": [t.transform.translation.x, t.transform.translation.y,
                         t.transform.translation.z],
         "rotation": [t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
                      t.transform.rotation.w]}
        for t in msg.transforms
    ]


out = {"vision_msgs_file": vision_msgs.__file__}
det_msg, tf_msg = detections(), transforms()
det_back = deserialize_message(serialize_message(det_msg), Detection3DArray)
tf_back = deserialize_message(serialize_message(tf_msg), TFMessage)
out["serialized"] = {"detections": read_detections(det_back),
                     "transforms": read_transforms(tf_back),
                     "equal": det_back == det_msg and tf_back == tf_msg}

ctx = Context()
rclpy.init(context=ctx)
try:
    talker = rclpy.create_node("interfaces_talker", context=ctx)
    listener = rclpy.create_node("interfaces_listener", context=ctx)
    got_det, got_tf = [], []
    listener.create_subscription(Detection3DArray, "detections", got_det.append, 10)
    listener.create_subscription(TFMessage, "/tf", got_tf.append, 100)
    det_pub = talker.create_publisher(Detection3DArray, "detections", 10)
    tf_pub = talker.create_publisher(TFMessage, "/tf", 100)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(talker)
    executor.add_node(listener)
    deadline = time.monotonic() + 15.0
    while not (got_det and got_tf) and time.monotonic() < deadline:  # discovery is async
        det_pub.publish(det_msg)
        tf_pub.publish(tf_msg)
        executor.spin_once(timeout_sec=0.05)
    out["received"] = {
        "detections": read_detections(got_det[0]) if got_det else None,
        "transforms": read_transforms(got_tf[0]) if got_tf else None,
        "equal": bool(got_det and got_tf and got_det[0] == det_msg and got_tf[0] == tf_msg),
    }
    hashes = {}
    for topic in ("/detections", "/tf"):
        for info in listener.get_publishers_info_by_topic(topic):
            type_hash = getattr(info, "topic_type_hash", None)  # Iron and later
            if type_hash is not None:
                hashes[info.topic_type] = str(type_hash)
    out["hashes"] = hashes
    executor.shutdown()
    talker.destroy_node()
    listener.destroy_node()
finally:
    rclpy.shutdown(context=ctx)
print(json.dumps(out))
"""


def _fresh_env() -> dict[str, str]:
    """The test's environment (DDS isolation from conftest), minus what the ROS wheels'
    bootstrapper sets on start, so the probe proves nothing needs setting by hand. With a
    sourced ROS install (a robot) the environment is that install's and is kept."""
    env = dict(os.environ)
    if env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None) is not None:
        for name in ("LD_LIBRARY_PATH", "AMENT_PREFIX_PATH", "PYTHONPATH"):
            env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(SPEC)], env=_fresh_env(),
        cwd=tmp_path_factory.mktemp("probe"), capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _approx(spec: dict) -> dict:
    """SPEC with every float compared to 1e-12 (CDR carries float64 exactly)."""
    return json.loads(json.dumps(spec), parse_float=lambda s: pytest.approx(float(s), abs=1e-12))


def test_messages_survive_serialization(probe: dict) -> None:
    got = probe["serialized"]
    assert got["detections"] == _approx({k: SPEC[k] for k in ("frame_id", "stamp",
                                                              "detections")})
    assert got["transforms"] == _approx(SPEC["transforms"])
    assert got["equal"]


def test_messages_cross_a_real_topic(probe: dict) -> None:
    got = probe["received"]
    assert got["detections"] is not None, "no Detection3DArray within 15 s"
    assert got["transforms"] is not None, "no TFMessage on /tf within 15 s"
    assert got["detections"] == _approx({k: SPEC[k] for k in ("frame_id", "stamp",
                                                              "detections")})
    assert got["transforms"] == _approx(SPEC["transforms"])
    assert got["equal"]


def test_announced_type_hashes_are_upstreams(probe: dict) -> None:
    if not probe["hashes"]:
        pytest.skip("this rclpy reports no type hashes (before Iron)")
    assert probe["hashes"] == HASHES


def test_wheel_environment_uses_the_venv_build(probe: dict) -> None:
    if "_ROS_WHEELS_BOOTSTRAP_COMPLETE" not in os.environ:
        pytest.skip("ROS comes from a distribution install here, not from the wheels")
    assert Path(probe["vision_msgs_file"]).resolve().is_relative_to(Path(sys.prefix).resolve())


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip_with_rosbags(tmp_path: Path, storage: str) -> None:
    from geometry_msgs.msg import TransformStamped
    from rclpy.serialization import deserialize_message
    from rosbags.typesys import Stores, get_typestore
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    from dvc_perception.bag.interfaces import add_vendored_types
    from dvc_perception.bag.io import AtomicBagWriter, BagReader

    sent = Detection3DArray()
    sent.header.frame_id = SPEC["frame_id"]
    sent.header.stamp.sec, sent.header.stamp.nanosec = SPEC["stamp"]
    for d in SPEC["detections"]:
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id, hyp.hypothesis.score = d["class_id"], d["score"]
        hyp.pose.pose.position.x, hyp.pose.pose.position.y, hyp.pose.pose.position.z = (
            d["position"])
        det = Detection3D(header=sent.header, id=d["id"], results=[hyp])
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = d["size"]
        sent.detections.append(det)
    tf = TransformStamped(child_frame_id=SPEC["transforms"][0]["child"])
    tf.header.frame_id = SPEC["transforms"][0]["parent"]
    tf.transform.translation.z = SPEC["transforms"][0]["translation"][2]
    sent_tf = TFMessage(transforms=[tf])

    with AtomicBagWriter(tmp_path / "bag", storage) as writer:
        writer.write_message("/perception_node/detections", sent, 10**9)
        writer.write_message("/tf", sent_tf, 10**9)
    typestore = add_vendored_types(get_typestore(Stores.ROS2_KILTED))
    with BagReader(tmp_path / "bag") as reader:
        topics = reader.topics()
        assert topics["/perception_node/detections"].msgtype == "vision_msgs/msg/Detection3DArray"
        assert topics["/tf"].msgtype == "tf2_msgs/msg/TFMessage"
        (raw,) = reader.messages(["/perception_node/detections"])
        (raw_tf,) = reader.messages(["/tf"])
    # Decoded by rclpy (the generated C code) and by rosbags (the vendored .msg text): two
    # independent readings of the same bytes.
    assert deserialize_message(raw.rawdata, Detection3DArray) == sent
    assert deserialize_message(raw_tf.rawdata, TFMessage) == sent_tf
    by_rosbags = typestore.deserialize_cdr(raw.rawdata, "vision_msgs/msg/Detection3DArray")
    assert by_rosbags.header.frame_id == SPEC["frame_id"]
    assert [d.id for d in by_rosbags.detections] == ["0", "1"]
    assert [d.results[0].hypothesis.class_id for d in by_rosbags.detections] == [
        d["class_id"] for d in SPEC["detections"]]
    assert [d.results[0].hypothesis.score for d in by_rosbags.detections] == [0.875, 0.5]
    assert by_rosbags.detections[1].bbox.size.z == 0.2
    assert by_rosbags.detections[0].results[0].pose.pose.position.z == 0.75
    tf_by_rosbags = typestore.deserialize_cdr(raw_tf.rawdata, "tf2_msgs/msg/TFMessage")
    assert tf_by_rosbags.transforms[0].child_frame_id == "lmo_obj_05"
    assert tf_by_rosbags.transforms[0].transform.translation.z == 0.75
    # rosbags serializes from the vendored text; rclpy must read it back.
    back = deserialize_message(
        bytes(typestore.serialize_cdr(by_rosbags, "vision_msgs/msg/Detection3DArray")),
        Detection3DArray)
    assert back == sent
    assert {name: typestore.hash_rihs01(name) for name in HASHES} == HASHES
