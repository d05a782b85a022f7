"""object_depth_node as a separate process (its console script, --ros-args --params-file), real rclpy, loopback only."""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402

from bgprompt_core.frame.estimator import EstimatorConfig, ObjectDepthEstimator  # noqa: E402
from bgprompt_ros.readiness import NotReady, wait_for_nodes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NODE = str(Path(sys.executable).parent / "object_depth_node")
H, W = 120, 160
K = [150.0, 0.0, 79.5, 0.0, 150.0, 59.5, 0.0, 0.0, 1.0]


def frame(gray=False):
    rng = np.random.default_rng(0)
    img = np.full((H, W, 3), 250, np.uint8)
    labels = np.zeros((H, W), np.uint8)
    labels[30:90, 40:120] = 1
    tex = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    img[30:90, 40:120] = tex[..., :1] if gray else tex
    return img, labels


def image_msg(arr, encoding, stamp, frame_id="cam_optical", pad=0):
    h, w = arr.shape[:2]
    row = arr[0].nbytes
    data = np.zeros((h, row + pad), np.uint8)
    data[:, :row] = arr.reshape(h, -1).view(np.uint8)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=row + pad, data=data.tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = stamp // 10**9, stamp % 10**9, frame_id
    return msg


def info_msg(stamp, k=K, w=W, h=H, frame_id="cam_optical"):
    msg = CameraInfo(width=w, height=h, k=list(k), distortion_model="plumb_bob", d=[0.0] * 5,
                     p=[k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0])
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = stamp // 10**9, stamp % 10**9, frame_id
    return msg


def stamp_of(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def decode_cloud(msg):
    """Independent of our encoder: the `pointcloud2` package reads the field table."""
    import pointcloud2

    pts = pointcloud2.read_points(msg, field_names=["x", "y", "z"], reshape_organized_cloud=True)
    return np.stack([pts["x"], pts["y"], pts["z"]], -1)


@pytest.fixture(scope="module")
def node_proc(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node")
    params = tmp / "params.yaml"
    params.write_text(f"""/**:
  ros__parameters:
    model: {tiny_model_dir}
    prompt: none
    backend: torch
    sub_reliability: reliable
    queue_size: 10
    diagnostics_period: 0.2
    cloud_mode: organized
""")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOG_DIR": str(tmp / "log"),
           "FASTRTPS_DEFAULT_PROFILES_FILE": str(ROOT / "config" / "fastdds_large_messages.xml")}
    os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = env["FASTRTPS_DEFAULT_PROFILES_FILE"]
    proc = subprocess.Popen([NODE, "--ros-args", "--params-file", str(params)], env=env,
                            stdout=open(tmp / "node.out", "w"), stderr=subprocess.STDOUT)
    if not rclpy.ok():  # a spawned-node test may have started it
        rclpy.init()
    node = rclpy.create_node("bgprompt_test_client")
    rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    got = {"depth": [], "info": [], "cloud": [], "diag": []}
    subs = [node.create_subscription(Image, "object_depth", got["depth"].append, rel),
            node.create_subscription(CameraInfo, "object_depth/camera_info", got["info"].append, rel),
            node.create_subscription(PointCloud2, "object_points", got["cloud"].append, rel)]
    node.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 10)
    pubs = {"image": node.create_publisher(Image, "image", rel), "camera_info": node.create_publisher(CameraInfo, "camera_info", rel),
            "mask": node.create_publisher(Image, "mask", rel)}
    outs = {"object_depth": subs[0], "object_depth/camera_info": subs[1], "object_points": subs[2]}
    try:  # the node is active and matched both ways: a subscriber count alone would count any probe
        wait_for_nodes(node, ["object_depth"], 120, publishers=pubs, subscriptions=outs)
    except NotReady as exc:
        pytest.fail(f"{exc}\n{(tmp / 'node.out').read_text()}")
    yield proc, node, pubs, got, tmp
    if proc.poll() is None:
        proc.kill()
    node.destroy_node()
    rclpy.try_shutdown()


NODE_TOPICS = ("image", "camera_info", "mask", "sensor_depth", "object_depth", "object_points", "object_markers")


def spawn_node(tmp_path, name: str, ros_args: tuple = (), **params) -> subprocess.Popen:
    """Another object_depth_node process, called ``name``, its topics under ``name/``, with ``params`` (a params
    file) and ``ros_args`` (more --ros-args, e.g. ``("-p", "max_depth:=2")``)."""
    value = lambda v: str(v).lower() if isinstance(v, bool) else v  # noqa: E731 (YAML booleans)
    path = tmp_path / f"{name}.yaml"
    path.write_text("/**:\n  ros__parameters:\n" + "".join(f"    {k}: {value(v)}\n" for k, v in params.items()))
    remaps = sum((["-r", f"{t}:={name}/{t}"] for t in NODE_TOPICS), ["-r", f"__node:={name}"])
    return subprocess.Popen([NODE, "--ros-args", "--params-file", str(path), *remaps, *ros_args],
                            env={**os.environ, "ROS_LOG_DIR": str(tmp_path / "log")},
                            stdout=open(tmp_path / "node.out", "w"), stderr=subprocess.STDOUT)


@contextlib.contextmanager
def spawned(tmp_path, name: str, ros_args: tuple = (), **params):
    """(process, client node) of ``spawn_node``; both are stopped afterwards."""
    proc = spawn_node(tmp_path, name, ros_args, **params)
    if not rclpy.ok():
        rclpy.init()
    node = rclpy.create_node(f"bgprompt_{name}_client")
    try:
        yield proc, node
    finally:
        node.destroy_node()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


def input_publishers(node, name: str, topics=("image", "camera_info", "mask"), depth: int = 10) -> dict:
    """Reliable publishers on the spawned node's inputs, keyed by their topic names."""
    rel = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
    return {f"{name}/{t}": node.create_publisher(CameraInfo if t == "camera_info" else Image, f"{name}/{t}", rel)
            for t in topics}


_STAMP = [time.time_ns() // 10**7 * 10**7]  # shared by every client: stamps never repeat across tests


class Client:
    def __init__(self, node_proc):
        self.proc, self.node, self.pubs, self.got, self.tmp = node_proc

    @property
    def stamp(self) -> int:
        return _STAMP[0]

    @stamp.setter
    def stamp(self, value: int) -> None:
        _STAMP[0] = value

    def send(self, img=None, mask=None, info=None, encoding="rgb8", pad=0, mask_encoding="mono8", skip_info=False):
        self.stamp += 10**7
        img_, lab = frame()
        img = img_ if img is None else img
        mask = lab * 255 if mask is None else mask
        self.pubs["image"].publish(image_msg(img, encoding, self.stamp, pad=pad))
        self.pubs["mask"].publish(image_msg(mask, mask_encoding, self.stamp))
        if not skip_info:
            self.pubs["camera_info"].publish(info if info is not None else info_msg(self.stamp))
        return self.stamp

    def wait_for(self, stamp, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            found = [next((m for m in self.got[k] if stamp_of(m) == stamp), None) for k in ("depth", "info", "cloud")]
            if all(found):
                return found
        return None

    def counters(self, after: int | None = None, timeout: float = 30.0):
        """The node's counters from a /diagnostics message published after this call (or after ``after``)."""
        seen = len(self.got["diag"]) if after is None else after
        deadline = time.time() + timeout
        while len(self.got["diag"]) <= seen and time.time() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.05)
        assert len(self.got["diag"]) > seen, "no /diagnostics message from the node"
        return {kv.key: kv.value for kv in self.got["diag"][-1].status[0].values}

    def wait_counter(self, key: str, at_least: int, timeout: float = 60.0) -> dict:
        """Spin until the node's diagnostics report ``key`` >= at_least (its verdict on frames sent so far)."""
        deadline = time.time() + timeout
        vals = self.counters()
        while int(vals[key]) < at_least and time.time() < deadline:
            vals = self.counters()
        return vals


def test_outputs_carry_the_input_header_and_match_the_estimator(node_proc, tiny_model_dir):
    c = Client(node_proc)
    s = c.send()
    out = c.wait_for(s)
    assert out is not None, (c.tmp / "node.out").read_text()[-3000:]
    depth_msg, info, cloud = out
    for m in out:
        assert stamp_of(m) == s and m.header.frame_id == "cam_optical"
    assert depth_msg.encoding == "32FC1" and depth_msg.step == W * 4
    depth = np.frombuffer(bytes(depth_msg.data), "<f4").reshape(H, W)
    img, labels = frame()
    est = ObjectDepthEstimator(EstimatorConfig(model=str(tiny_model_dir), prompt="none"))
    ref = est.estimate(img, np.array(K).reshape(3, 3), labels * 255)
    assert np.array_equal(np.isnan(depth), np.isnan(ref.depth))
    assert np.allclose(depth[ref.valid], ref.depth[ref.valid], rtol=1e-5)
    assert np.isnan(depth[labels == 0]).all() and (depth[labels == 0] != 0).all()
    assert list(info.k) == K and (info.width, info.height) == (W, H)
    pts = decode_cloud(cloud)
    assert pts.shape == (H, W, 3) and cloud.is_dense is False and cloud.point_step == 32
    Km = np.array(K).reshape(3, 3)
    v, u = np.nonzero(np.isfinite(depth))
    z = depth[v, u]
    expect = np.stack([(u - Km[0, 2]) / Km[0, 0] * z, (v - Km[1, 2]) / Km[1, 1] * z, z], 1)
    assert np.allclose(pts[v, u], expect, atol=1e-6)
    assert np.isnan(pts[~np.isfinite(depth)]).all()
    assert "Loading weights" not in (c.tmp / "node.out").read_text()  # no progress bars in a node's log


def test_encodings_and_padded_steps_give_the_same_depth(node_proc):
    c = Client(node_proc)
    gray, _ = frame(gray=True)
    depths = []
    for enc, arr, pad in [("rgb8", gray, 0), ("bgr8", gray[..., ::-1], 0), ("mono8", gray[..., 0], 0),
                          ("rgb8", gray, 13), ("bgra8", np.concatenate([gray[..., ::-1], gray[..., :1]], -1), 0)]:
        s = c.send(img=np.ascontiguousarray(arr), encoding=enc, pad=pad)
        out = c.wait_for(s)
        assert out is not None, f"no output for {enc} pad {pad}"
        depths.append(np.frombuffer(bytes(out[0].data), "<f4").reshape(H, W))
    for d in depths[1:]:
        assert np.array_equal(np.isnan(d), np.isnan(depths[0])) and np.allclose(d, depths[0], equal_nan=True)


def test_bad_input_is_skipped_with_a_warning_and_the_node_keeps_serving(node_proc):
    c = Client(node_proc)
    img, labels = frame()
    bad = [
        dict(encoding="yuv422", img=img[..., :2].copy()),
        dict(mask=np.zeros((10, 10), np.uint8)),
        dict(mask=np.zeros((H, W), np.uint8)),
        dict(info=info_msg(0, k=[0.0] * 9)),
        dict(info=info_msg(0, k=[float("nan")] * 9)),
        dict(skip_info=True),
        dict(img=np.zeros((1, 1, 3), np.uint8), mask=np.zeros((1, 1), np.uint8), info=info_msg(0, w=1, h=1)),
        dict(img=np.zeros((5000, 4000, 3), np.uint8), mask=np.zeros((5000, 4000), np.uint8), info=info_msg(0, w=4000, h=5000)),
    ]
    before = int(c.counters()["skipped_bad_input"])
    expected = before
    for case in bad:
        if "info" in case:  # give the camera_info the frame's stamp
            case = dict(case)
            inf = case.pop("info")
            s = c.stamp + 10**7
            inf.header.stamp.sec, inf.header.stamp.nanosec = s // 10**9, s % 10**9
            case["info"] = inf
        s = c.send(**case)
        if "skip_info" not in case:  # a frame without camera_info never completes the sync: nothing to skip
            expected += 1
            # under load a 60 MB frame takes a while: wait for the node's verdict, not for a time
            assert int(c.wait_counter("skipped_bad_input", expected)["skipped_bad_input"]) == expected
        good = c.send()
        assert c.wait_for(good) is not None, f"node stopped serving after {list(case)}"
        # frames are served in order: the good frame after it came out, the bad one never did
        assert not any(stamp_of(m) == s for k in ("depth", "info", "cloud") for m in c.got[k])
    counters = c.counters()
    assert int(counters["skipped_bad_input"]) - before == len(bad) - 1  # the frame without camera_info never syncs
    assert int(counters["errors"]) == 0
    log = (c.tmp / "node.out").read_text()
    for needle in ("yuv422", "mask is 10x10", "empty mask", "focal", "NaN", "too small", "exceeds 4096x4096"):
        assert needle in log, needle
    assert c.proc.poll() is None


def test_a_4000x3000_frame_is_processed(node_proc):
    c = Client(node_proc)
    img = np.full((3000, 4000, 3), 240, np.uint8)
    mask = np.zeros((3000, 4000), np.uint8)
    mask[1000:2000, 1500:2500] = 255
    img[mask > 0] = (30, 120, 60)
    k = [2000.0, 0.0, 1999.5, 0.0, 2000.0, 1499.5, 0.0, 0.0, 1.0]
    s = c.send(img=img, mask=mask, info=info_msg(c.stamp + 10**7, k=k, w=4000, h=3000))
    out = c.wait_for(s, timeout=60)
    assert out is not None and (out[0].width, out[0].height) == (4000, 3000)
    depth = np.frombuffer(bytes(out[0].data), "<f4").reshape(3000, 4000)
    assert np.isfinite(depth[1100:1900, 1600:2400]).all() and np.isnan(depth[mask == 0]).all()


def test_overload_drops_stale_frames_and_reports_them(node_proc):
    c = Client(node_proc)
    before = int(c.counters()["dropped_overload"])
    stamps = [c.send() for _ in range(60)]  # far faster than the node processes
    last = c.wait_for(stamps[-1], timeout=60)
    assert last is not None
    counters = c.counters()
    served = sum(1 for m in c.got["depth"] if stamp_of(m) in set(stamps))
    assert int(counters["dropped_overload"]) > before and served < len(stamps)
    p50, worst = float(counters["latency_p50_ms"]), float(counters["latency_max_ms"])
    assert 0 < p50 <= worst  # receive -> published, as the node measured it


def test_a_see_through_object_gets_points_on_the_object_not_on_the_table_behind(tmp_path):
    """mini + fusion fill, live: the sensor reads the table through a glass box (or nothing); the published
    object points must lie on the box, the markers must describe it, and the diagnostics must say why."""
    import pointcloud2
    from visualization_msgs.msg import Marker, MarkerArray

    from scenes import box_on_table, table_image

    h, w = 240, 320
    k = [300.0, 0.0, 159.5, 0.0, 300.0, 119.5, 0.0, 0.0, 1.0]
    Km = np.array(k).reshape(3, 3)
    gt, table, box = box_on_table(Km, h, w)
    img = table_image(Km, h, w, table, box, glass=True)
    sensor = np.round(np.where(np.isfinite(table), table, 0) * 1000).astype(np.uint16)  # the table, through the box
    sensor[box & (np.random.default_rng(0).random(box.shape) < 0.2)] = 0
    with spawned(tmp_path, "glass", model="mini", prompt="1bg", scale="align-to-sensor", align="scale-shift",
                      fusion="fill", recenter=True, sub_reliability="reliable", diagnostics_period=0.2,
                      cloud_mode="organized") as (proc, node):
        rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        clouds, markers, diag = [], [], []
        subs = {"glass/object_points": node.create_subscription(PointCloud2, "glass/object_points", clouds.append, rel),
                "glass/object_markers": node.create_subscription(MarkerArray, "glass/object_markers", markers.append,
                                                                 rel)}
        node.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 10)
        pubs = input_publishers(node, "glass", ("image", "camera_info", "mask", "sensor_depth"))
        try:
            wait_for_nodes(node, ["glass"], 180, publishers=pubs, subscriptions=subs)
        except NotReady as exc:
            pytest.fail(f"{exc}\n{(tmp_path / 'node.out').read_text()}")
        s = time.time_ns()
        pubs["glass/image"].publish(image_msg(img, "rgb8", s))
        pubs["glass/mask"].publish(image_msg(box.astype(np.uint8) * 255, "mono8", s))
        pubs["glass/sensor_depth"].publish(image_msg(sensor, "16UC1", s))
        pubs["glass/camera_info"].publish(info_msg(s, k=k, w=w, h=h))
        deadline = time.time() + 120
        while time.time() < deadline and not (clouds and markers):
            rclpy.spin_once(node, timeout_sec=0.05)
        assert clouds and markers, (tmp_path / "node.out").read_text()[-3000:]
        got = pointcloud2.read_points(clouds[-1], field_names=["z", "label", "source"]).reshape(h, w)
        on = got["label"] == 1
        assert np.array_equal(on, box & np.isfinite(got["z"]))  # every box pixel, nothing else
        z = got["z"][on].astype(np.float64)
        closer = np.abs(z - gt[on]) < np.abs(z - table[on])
        assert closer.mean() >= 0.9, closer.mean()  # on the object, not on the table seen through it
        assert (got["source"][on] == 2).mean() > 0.95  # the see-through readings were replaced
        cube = next(m for m in markers[-1].markers if m.ns == "box")
        assert cube.id == 1 and cube.type == Marker.CUBE and cube.header.frame_id == "cam_optical"
        assert gt[box].min() - 0.02 < cube.pose.position.z < table[box].max()
        while time.time() < deadline and not any("object_1_fusion" in kv.key for d in diag for kv in d.status[0].values):
            rclpy.spin_once(node, timeout_sec=0.05)
        report = next(kv.value for d in diag for kv in d.status[0].values if kv.key == "object_1_fusion")
        fields = dict(item.split("=") for item in report.split(", "))
        assert fields["scale_from"] == "support-contact" and float(fields["see_through"]) > 0.7
        assert "seen through it" in (tmp_path / "node.out").read_text()


def test_outputs_that_look_healthy_but_are_not_turn_the_diagnostics_to_warn(tiny_model_dir, tmp_path):
    """All-zero sensor depth: nothing finite is published -> WARN naming it; then inputs whose stamps never
    pair -> WARN 'no sync match'. Before, both said OK."""
    with spawned(tmp_path, "silent", model=tiny_model_dir, prompt="none", scale="align-to-sensor", fusion="fill",
                      sub_reliability="reliable", diagnostics_period=0.2) as (proc, node):
        diag = []
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: diag.extend(st for st in m.status if st.name.startswith("silent")), 10)
        pubs = input_publishers(node, "silent", ("image", "camera_info", "mask", "sensor_depth"))
        try:
            wait_for_nodes(node, ["silent"], 120, publishers=pubs)
        except NotReady as exc:
            pytest.fail(f"{exc}\n{(tmp_path / 'node.out').read_text()}")

        def send(info_offset=0):
            s = time.time_ns()
            img, labels = frame()
            pubs["silent/image"].publish(image_msg(img, "rgb8", s))
            pubs["silent/mask"].publish(image_msg(labels * 255, "mono8", s))
            pubs["silent/sensor_depth"].publish(image_msg(np.zeros((H, W), np.uint16), "16UC1", s))
            pubs["silent/camera_info"].publish(info_msg(s + info_offset))

        def wait_warn(needle, deadline=60.0):
            end = time.time() + deadline
            while time.time() < end:
                send() if needle != "no sync match" else send(info_offset=10**9)
                for _ in range(5):
                    rclpy.spin_once(node, timeout_sec=0.05)
                if diag and diag[-1].level == DiagnosticStatus.WARN and needle in diag[-1].message:
                    return diag[-1]
            pytest.fail(f"no WARN with {needle!r}; last: {diag[-1].message if diag else None}")

        st = wait_warn("no finite depth")
        values = {kv.key: kv.value for kv in st.values}
        assert "sensor coverage 0" in st.message and float(values["sensor_coverage"]) == 0.0
        assert int(values["no_finite_frames"]) >= 1
        st = wait_warn("no sync match")
        assert "check the stamps" in st.message


def test_max_depth_set_at_run_time_applies_to_the_next_frame(node_proc):
    """max_depth is declared as taking effect at once: it must not wait for a reconfigure."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    c = Client(node_proc)
    before = c.wait_for(c.send())
    depth = np.frombuffer(bytes(before[0].data), "<f4").reshape(H, W)
    cut = float(np.nanmedian(depth))  # relative depth (tiny model): half the object lies beyond it
    client = c.node.create_client(SetParameters, "/object_depth/set_parameters")
    assert client.wait_for_service(timeout_sec=30)
    req = SetParameters.Request(parameters=[Parameter(name="max_depth", value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=cut))])
    fut = client.call_async(req)
    rclpy.spin_until_future_complete(c.node, fut, timeout_sec=30)
    assert fut.result().results[0].successful
    after = c.wait_for(c.send())
    limited = np.frombuffer(bytes(after[0].data), "<f4").reshape(H, W)
    assert np.nanmax(limited) <= cut and np.isfinite(limited).sum() < np.isfinite(depth).sum()
    fut = client.call_async(SetParameters.Request(parameters=[Parameter(name="max_depth", value=ParameterValue(
        type=ParameterType.PARAMETER_DOUBLE, double_value=0.0))]))
    rclpy.spin_until_future_complete(c.node, fut, timeout_sec=30)
    c.node.destroy_client(client)


def test_bad_start_up_values_fail_configure_with_the_reason_and_the_node_keeps_running(tiny_model_dir, tmp_path):
    """queue_size 0 left the node silently unconfigured (diagnostics OK); diagnostics_period -1 crashed it; device 0
    raised InvalidParameterTypeException in the constructor (exit 1); an unknown name was silently ignored."""
    from bgprompt_ros.readiness import lifecycle_state

    # -p: an integer for a decimal (accepted), an integer for a string (refused with the reason)
    with spawned(tmp_path, "bad_start", ("-p", "max_depth:=2", "-p", "rembg_model:=7"), model=tiny_model_dir,
                 prompt="none", queue_size=0, diagnostics_period=-1.0, device=0, cache_dir="/opt/x") as (proc, node):
        errors = []
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: errors.extend(
            st for st in m.status if st.name.startswith("bad_start") and st.level == DiagnosticStatus.ERROR), 10)
        deadline = time.time() + 120
        while time.time() < deadline and not errors:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert errors, (tmp_path / "node.out").read_text()[-3000:]
        assert "queue_size must be an integer >= 1, got 0" in errors[-1].message
        assert "diagnostics_period must be a finite number of seconds > 0, got -1.0" in errors[-1].message
        # a whole number for a string parameter (InvalidParameterTypeException at start-up before) and a name the
        # node does not have (silently ignored before; docs/DEPLOYMENT.md gave cache_dir)
        assert "device must be a string, got 0 (int)" in errors[-1].message
        assert "unknown parameters ['cache_dir']" in errors[-1].message
        assert "rembg_model must be a string, got 7 (int)" in errors[-1].message
        assert "max_depth" not in errors[-1].message
        assert lifecycle_state(node, "bad_start", "/") == "unconfigured"
        assert proc.poll() is None  # still running, reachable, reporting
        log = (tmp_path / "node.out").read_text()
        assert "configure failed: " in log and "queue_size must be" in log and "Traceback" not in log


def test_distorted_camera_info_is_served_with_one_warning(node_proc):
    c = Client(node_proc)
    for _ in range(3):
        s = c.stamp + 10**7
        info = info_msg(s)
        info.d = [0.1, -0.05, 0.0, 0.0, 0.0]
        assert c.wait_for(c.send(info=info)) is not None  # served, not skipped
    log = (c.tmp / "node.out").read_text()
    assert log.count("camera_info has non-zero distortion") == 1 and "rectified" in log


def test_the_whole_transition_graph_with_frames_in_between(tiny_model_dir, tmp_path):
    """configure, activate, deactivate, activate, deactivate, cleanup, configure, shutdown: outputs exactly while
    active, never two workers, nothing published after deactivate."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    from bgprompt_ros.readiness import lifecycle_state

    with spawned(tmp_path, "lc", model=tiny_model_dir, prompt="none", autostart=False, sub_reliability="reliable",
                      diagnostics_period=0.2) as (proc, node):
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        got, diag = [], []
        depth_sub = node.create_subscription(Image, "lc/object_depth", got.append, rel)
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diag.extend(
            st for st in m.status if st.name.startswith("lc:")), 10)
        pubs = input_publishers(node, "lc", depth=50)
        client = node.create_client(ChangeState, "/lc/change_state")
        assert client.wait_for_service(timeout_sec=120), (tmp_path / "node.out").read_text()

        def change(tid):
            fut = client.call_async(ChangeState.Request(transition=Transition(id=tid)))
            rclpy.spin_until_future_complete(node, fut, timeout_sec=120)
            assert fut.done() and fut.result().success, (tid, (tmp_path / "node.out").read_text()[-2000:])

        def send():
            s = time.time_ns()
            img, labels = frame()
            pubs["lc/image"].publish(image_msg(img, "rgb8", s))
            pubs["lc/mask"].publish(image_msg(labels * 255, "mono8", s))
            pubs["lc/camera_info"].publish(info_msg(s))
            return s

        def serve_after_activate(silent: list[int]):
            """Activate, wait until ready, send a frame and wait for its output (the readiness signal); the
            frames sent while not active must never have come out, before or after."""
            change(Transition.TRANSITION_ACTIVATE)
            wait_for_nodes(node, ["lc"], 120, publishers=pubs, subscriptions={"lc/object_depth": depth_sub})
            stamp = send()
            end = time.time() + 60
            while time.time() < end and not any(stamp_of(m) == stamp for m in got):
                rclpy.spin_once(node, timeout_sec=0.05)
            assert any(stamp_of(m) == stamp for m in got)
            assert not {stamp_of(m) for m in got} & set(silent)

        change(Transition.TRANSITION_CONFIGURE)
        silent = [send()]  # configured, not active
        serve_after_activate(silent)
        change(Transition.TRANSITION_DEACTIVATE)
        silent.append(send())
        serve_after_activate(silent)
        change(Transition.TRANSITION_DEACTIVATE)
        change(Transition.TRANSITION_CLEANUP)
        silent.append(send())
        change(Transition.TRANSITION_CONFIGURE)
        serve_after_activate(silent)
        seen = len(diag)
        end = time.time() + 60  # the node's own count of worker threads, from its next reports
        while time.time() < end and sum(any(kv.key == "workers" for kv in st.values) for st in diag[seen:]) < 3:
            rclpy.spin_once(node, timeout_sec=0.05)
        workers = [int(kv.value) for st in diag for kv in st.values if kv.key == "workers"]
        assert len(workers) >= 3 and max(workers) == 1
        change(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert lifecycle_state(node, "lc", "/") in ("finalized", None, "unreachable")
        proc.wait(timeout=30)  # main() returns once the node is finalized
        assert proc.returncode == 0 and "Traceback" not in (tmp_path / "node.out").read_text()


def _set_params(node, name: str, **values) -> list:
    """Set parameters of node ``name`` over its service; the results (successful, reason)."""
    from rcl_interfaces.msg import Parameter
    from rclpy.parameter import Parameter as Value
    from rcl_interfaces.srv import SetParameters

    client = node.create_client(SetParameters, f"/{name}/set_parameters")
    assert client.wait_for_service(timeout_sec=60)
    fut = client.call_async(SetParameters.Request(parameters=[
        Parameter(name=k, value=Value(k, value=v).get_parameter_value()) for k, v in values.items()]))
    rclpy.spin_until_future_complete(node, fut, timeout_sec=30)
    node.destroy_client(client)
    return fut.result().results


class Spawned:
    """Inputs, outputs and diagnostics of a node started with ``spawned``."""

    def __init__(self, node, name: str, tmp_path, topics=("image", "camera_info", "mask")):
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node, self.name, self.tmp = node, name, tmp_path
        self.got = {"depth": [], "cloud": [], "diag": []}
        outs = {f"{name}/object_depth": node.create_subscription(Image, f"{name}/object_depth",
                                                                  self.got["depth"].append, rel),
                f"{name}/object_points": node.create_subscription(PointCloud2, f"{name}/object_points",
                                                                   self.got["cloud"].append, rel)}
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.got["diag"].extend(
            st for st in m.status if st.name.startswith(f"{name}:")), 10)
        self.pubs = input_publishers(node, name, topics, depth=50)
        try:
            wait_for_nodes(node, [name], 120, publishers=self.pubs, subscriptions=outs)
        except NotReady as exc:
            pytest.fail(f"{exc}\n{self.log()}")

    def log(self) -> str:
        return (self.tmp / "node.out").read_text()

    def send(self, stamp: int, mask=None) -> int:
        img, labels = frame()
        self.pubs[f"{self.name}/image"].publish(image_msg(img, "rgb8", stamp))
        self.pubs[f"{self.name}/mask"].publish(image_msg(labels * 255 if mask is None else mask, "mono8", stamp))
        self.pubs[f"{self.name}/camera_info"].publish(info_msg(stamp))
        return stamp

    def served(self, stamp: int, timeout: float = 60.0):
        """(depth, cloud) messages of the frame stamped ``stamp``, or None by the deadline."""
        end = time.time() + timeout
        while time.time() < end:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            found = [next((m for m in self.got[k] if stamp_of(m) == stamp), None) for k in ("depth", "cloud")]
            if all(found):
                return found
        return None

    def diag_until(self, check, timeout: float = 60.0):
        """The first /diagnostics status of this node, from now on, for which ``check(status)`` holds."""
        seen, end = len(self.got["diag"]), time.time() + timeout
        while time.time() < end:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            for st in self.got["diag"][seen:]:
                if check(st):
                    return st
            seen = len(self.got["diag"])
        last = self.got["diag"][-1] if self.got["diag"] else None
        pytest.fail(f"no matching diagnostics; last: {last.level if last else None} {last.message if last else ''}")


def values_of(status) -> dict:
    return {kv.key: kv.value for kv in status.values}


def test_a_warning_then_a_failing_frame_then_good_frames_are_all_served(tiny_model_dir, tmp_path):
    """The reported defects: a WARN (a mask of the wrong size) then an ERROR from the same logging call site made
    rclpy raise inside the worker's except block: the worker died, the node stayed `active`, 0 of 3 frames came
    out. The failing frame was a dense rgb cloud with no valid point (cv2.cvtColor on an empty array), and a
    whole number for a decimal parameter (`diagnostics_period: 1`) killed the node at start-up."""
    with spawned(tmp_path, "warn_err", model=tiny_model_dir, prompt="none", sub_reliability="reliable",
                 cloud_mode="dense", cloud_rgb=True, max_depth=0.5, diagnostics_period=1) as (proc, node):
        n = Spawned(node, "warn_err", tmp_path)
        s0 = time.time_ns()
        bad = n.send(s0, mask=np.zeros((10, 10), np.uint8))  # WARN: skipped
        n.diag_until(lambda st: int(values_of(st).get("skipped_bad_input", 0)) >= 1)  # its verdict, then the next
        empty = n.served(n.send(s0 + 10**7))  # every point beyond max_depth 0.5: an empty cloud, not a crash
        assert empty is not None, n.log()[-3000:]
        assert (empty[1].height, empty[1].width) == (1, 0) and np.isnan(decode_depth(empty[0])).all()
        results = _set_params(node, "warn_err", max_depth=0)  # an integer for a decimal: taken as 0.0
        assert results[0].successful, results[0].reason
        for k in range(3):
            out = n.served(n.send(s0 + (k + 2) * 10**7))
            assert out is not None, f"good frame {k} not served\n{n.log()[-3000:]}"
            assert out[1].width > 0 and np.isfinite(decode_depth(out[0])).any()
        assert not any(stamp_of(m) == bad for m in n.got["depth"])
        st = n.diag_until(lambda st: int(values_of(st).get("processed", 0)) >= 4)
        assert values_of(st)["workers"] == "1" and int(values_of(st)["skipped_bad_input"]) == 1
        assert proc.poll() is None and "Traceback" not in n.log() and "severity cannot be changed" not in n.log()


def decode_depth(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.width)


def test_a_looped_bag_is_served_whole_and_the_stamp_jump_is_named(node_proc):
    """The reported defect: after stamps went back (bag play --loop, a clock restart, one frame stamped in the
    future) the node served 0 of 30 frames and blamed the stamps. Each is served and the jump is named."""
    c = Client(node_proc)
    start = c.stamp
    loop = [start + k * 10**7 for k in range(1, 6)]

    def served(stamp: int, times: int = 1, timeout: float = 60.0) -> bool:
        """The frame stamped ``stamp`` came out ``times`` times (its depth and its cloud)."""
        end = time.time() + timeout
        while time.time() < end:
            if all(sum(stamp_of(m) == stamp for m in c.got[k]) >= times for k in ("depth", "cloud")):
                return True
            rclpy.spin_once(c.node, timeout_sec=0.05)
        return False

    missing = []
    for times in (1, 2):  # the same five stamps twice: a looped bag
        for s in loop:
            c.stamp = s - 10**7
            missing += [] if served(c.send(), times) else [(times, s)]
    future = c.stamp + 10 * 10**9  # then one frame stamped 10 s in the future, and the clock as it was
    c.stamp = future - 10**7
    missing += [] if served(c.send()) else [("future", future)]
    for s in loop:
        c.stamp = s + 10**9 - 10**7
        missing += [] if served(c.send()) else [("after", s)]
    assert not missing, missing
    counters = c.counters()
    assert int(counters["stamp_jumps"]) >= 2
    assert "went back" in (c.tmp / "node.out").read_text()
    c.stamp = future + 10**9  # later tests: stamps never used before


def test_run_time_changes_that_need_a_reconfigure_are_pending_and_activate_applies_what_was_configured(
        tiny_model_dir, tmp_path):
    """The reported defect: `scale: metric` and `segmentation: rembg` set at run time showed in the diagnostics as
    running while the output was unchanged, and a deactivate + activate applied rembg halfway (no mask
    subscription, 0/3 frames). Now the diagnostics show what runs and name what is pending."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    with spawned(tmp_path, "pend", model=tiny_model_dir, prompt="none", sub_reliability="reliable",
                 diagnostics_period=0.2) as (proc, node):
        n = Spawned(node, "pend", tmp_path)
        assert all(r.successful for r in _set_params(node, "pend", scale="metric", segmentation="rembg"))
        st = n.diag_until(lambda st: "pending" in st.message)
        v = values_of(st)
        assert v["scale"] == "relative" and v["segmentation"] == "mask_topic"
        assert "scale='metric'" in v["pending"] and "segmentation='rembg'" in v["pending"]
        client = node.create_client(ChangeState, "/pend/change_state")
        assert client.wait_for_service(timeout_sec=60)
        for tid in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_ACTIVATE):
            fut = client.call_async(ChangeState.Request(transition=Transition(id=tid)))
            rclpy.spin_until_future_complete(node, fut, timeout_sec=60)
            assert fut.result().success
        wait_for_nodes(node, ["pend"], 60, publishers=n.pubs)  # the mask subscription is back
        s0 = time.time_ns()
        assert all(n.served(n.send(s0 + k * 10**7)) for k in range(3)), n.log()[-3000:]
        # a wrong type at run time is refused with the reason
        bad = _set_params(node, "pend", device=0)
        assert not bad[0].successful and "device must be a string, got 0 (int)" in bad[0].reason


def test_no_input_and_inputs_that_stop_turn_the_diagnostics_to_warn(tiny_model_dir, tmp_path):
    """The reported defect: no input at all (a QoS mismatch) and inputs that stopped both said `ok`."""
    with spawned(tmp_path, "quiet", model=tiny_model_dir, prompt="none", sub_reliability="reliable",
                 diagnostics_period=0.2) as (proc, node):
        n = Spawned(node, "quiet", tmp_path)
        st = n.diag_until(lambda st: "no input on" in st.message)
        assert st.level == DiagnosticStatus.WARN and "QoS" in st.message
        assert n.served(n.send(time.time_ns())) is not None
        st = n.diag_until(lambda st: "inputs stopped" in st.message)
        assert st.level == DiagnosticStatus.WARN


def test_fault_injection_every_good_frame_after_each_fault_is_served_and_each_fault_is_named(tiny_model_dir,
                                                                                             tmp_path):
    """One live node through every bad input class the README lists, a parameter change, lifecycle transitions
    and a clock jump, in sequence: the good frame after each fault is served, and /diagnostics names the fault
    (WARN, its reason in the message) while it lasts."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    with spawned(tmp_path, "faults", model=tiny_model_dir, prompt="none", sub_reliability="reliable",
                 diagnostics_period=0.2) as (proc, node):
        n = Spawned(node, "faults", tmp_path)
        img, labels = frame()
        clock = [time.time_ns()]

        def stamp(back: float = 0.0) -> int:
            clock[0] += 10**7 - int(back * 1e9)
            return clock[0]

        def publish(s, image=None, encoding="rgb8", mask=None, info=None):
            n.pubs["faults/image"].publish(image_msg(img if image is None else image, encoding, s))
            n.pubs["faults/mask"].publish(image_msg(labels * 255 if mask is None else mask, "mono8", s))
            n.pubs["faults/camera_info"].publish(info or info_msg(s))

        def good(back: float = 0.0):
            s = stamp(back)
            publish(s)
            assert n.served(s) is not None, f"the good frame after the fault was not served\n{n.log()[-3000:]}"

        def fault(needle: str, **frame_kw):
            s = stamp()
            if "info" in frame_kw:  # give the camera_info the frame's stamp
                inf = frame_kw["info"]
                inf.header.stamp.sec, inf.header.stamp.nanosec = s // 10**9, s % 10**9
            publish(s, **frame_kw)
            st = n.diag_until(lambda st: needle in st.message)
            assert st.level == DiagnosticStatus.WARN, (needle, st.level, st.message)
            good()

        def change(tid):
            client = node.create_client(ChangeState, "/faults/change_state")
            assert client.wait_for_service(timeout_sec=60)
            fut = client.call_async(ChangeState.Request(transition=Transition(id=tid)))
            rclpy.spin_until_future_complete(node, fut, timeout_sec=60)
            node.destroy_client(client)
            assert fut.result().success, tid

        good()
        fault("yuv422", image=img[..., :2].copy(), encoding="yuv422")
        fault("mask is 10x10", mask=np.zeros((10, 10), np.uint8))
        fault("empty mask", mask=np.zeros((H, W), np.uint8))
        fault("non-positive focal", info=info_msg(0, k=[0.0] * 9))
        fault("implausible", info=info_msg(0, k=[1e-300, 0, 79.5, 0, 1e-300, 59.5, 0, 0, 1]))
        fault("NaN or inf", info=info_msg(0, k=[float("nan")] * 9))
        fault("camera_info is for", info=info_msg(0, w=320, h=240))
        assert _set_params(node, "faults", max_depth=3)[0].successful  # an integer for a decimal, at run time
        good()
        change(Transition.TRANSITION_DEACTIVATE)
        change(Transition.TRANSITION_ACTIVATE)
        wait_for_nodes(node, ["faults"], 60, publishers=n.pubs)
        good()
        s = stamp(back=10.0)  # the camera clock restarts 10 s back
        publish(s)
        assert n.served(s) is not None, n.log()[-3000:]
        st = n.diag_until(lambda st: "went back" in st.message)
        assert st.level == DiagnosticStatus.WARN and int(values_of(st)["stamp_jumps"]) == 1
        good()
        assert proc.poll() is None and "Traceback" not in n.log()


# last: it stops the module's node
def test_sigint_runs_the_lifecycle_shutdown_and_exits_cleanly(node_proc):
    """How fast it exits is a bench figure (make bench); here: it exits, cleanly, through on_shutdown."""
    proc, tmp = node_proc[0], node_proc[4]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    log = (tmp / "node.out").read_text()
    assert proc.returncode in (0, -signal.SIGINT), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "lifecycle shutdown from active" in log, log[-3000:]
