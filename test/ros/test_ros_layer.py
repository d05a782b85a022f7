"""bgprompt_ros without processes: conversions (byte-compatible with cv_bridge / sensor_msgs_py), sync, config."""
import array
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from bgprompt_ros import conversions
from bgprompt_core.messages.sync import Synchronizer

ROOT = Path(__file__).resolve().parents[2]


def test_decode_honours_padding_and_big_endian_and_is_zero_copy_when_possible():
    arr = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
    data = arr.tobytes()
    out = conversions.image_to_array("rgb8", 6, 5, 15, False, data)
    assert np.array_equal(out, arr) and np.shares_memory(out, np.frombuffer(data, np.uint8))
    padded = np.zeros((6, 20), np.uint8)
    padded[:, :15] = arr.reshape(6, 15)
    assert np.array_equal(conversions.image_to_array("rgb8", 6, 5, 20, False, padded.tobytes()), arr)
    d16 = np.array([[1, 300], [65535, 0]], np.uint16)
    assert np.array_equal(conversions.image_to_array("16UC1", 2, 2, 4, True, d16.astype(">u2").tobytes()), d16)
    f32 = np.array([[1.5, np.nan]], np.float32)
    assert np.array_equal(conversions.image_to_array("32FC1", 1, 2, 8, False, f32.tobytes()), f32, equal_nan=True)
    with pytest.raises(conversions.ConversionError, match="needs"):
        conversions.image_to_array("rgb8", 6, 5, 15, False, data[:-1])
    with pytest.raises(conversions.ConversionError, match="unsupported image encoding"):
        conversions.image_to_array("yuv422", 6, 5, 10, False, data)
    with pytest.raises(conversions.ConversionError, match="step"):
        conversions.image_to_array("rgb8", 6, 5, 10, False, data)


def test_colour_mask_and_sensor_depth_conversions():
    bgra = np.array([[[10, 20, 30, 255]]], np.uint8)
    assert conversions.to_rgb("bgra8", bgra).tolist() == [[[30, 20, 10]]]
    assert conversions.to_rgb("mono8", np.array([[7]], np.uint8)).tolist() == [[[7, 7, 7]]]
    assert conversions.to_mask("mono8", np.array([[0, 1, 255]], np.uint8)).tolist() == [[False, True, True]]
    labels = np.array([[0, 3, 7]], np.uint16)
    assert np.array_equal(conversions.to_mask("16UC1", labels), labels)
    d = conversions.to_sensor_depth("16UC1", np.array([[0, 1500]], np.uint16))
    assert np.isnan(d[0, 0]) and d[0, 1] == pytest.approx(1.5)
    assert np.isnan(conversions.to_sensor_depth("32FC1", np.array([[0.0, -1.0]], np.float32))).all()


def test_camera_matrix_validation():
    k = [100.0, 0, 50, 0, 100.0, 40, 0, 0, 1]
    assert conversions.camera_matrix(k, 100, 80, (80, 100))[0, 2] == 50
    for bad, msg in (([0.0] * 9, "focal"), ([float("nan")] * 9, "NaN")):
        with pytest.raises(conversions.ConversionError, match=msg):
            conversions.camera_matrix(bad, 100, 80, (80, 100))
    with pytest.raises(conversions.ConversionError, match="camera_info is for 640x480"):
        conversions.camera_matrix(k, 640, 480, (80, 100))
    # the reported defect: fx = fy = 1e-300 passed, and the dense cloud said is_dense with every point inf
    for f, fov in ((1e-300, 180.0), (0.2, 179.7), (1e9, 6e-6)):
        bad = [f, 0, 50, 0, f, 40, 0, 0, 1]
        with pytest.raises(conversions.ConversionError, match="implausible for a 100x80 image"):
            conversions.camera_matrix(bad, 100, 80, (80, 100))
        assert not 0.1 <= fov <= 179  # the field of view 2 atan(w / 2f) in degrees, outside the accepted range
    for f in (0.44, 45_000.0):  # 2 atan(50 / f) = 179.0 and 2 atan(40 / f) = 0.10 degrees: just inside
        conversions.camera_matrix([f, 0, 50, 0, f, 40, 0, 0, 1], 100, 80, (80, 100))
    with pytest.raises(conversions.ConversionError, match="not a pinhole camera matrix"):
        conversions.camera_matrix([100.0, 0, 50, 0, 100.0, 40, 0, 0, 2], 100, 80, (80, 100))


def sensor_msgs_py_style_cloud(points, rgb):
    """The per-point construction of sensor_msgs_py.point_cloud2.create_cloud (the slow path), as reference."""
    out = bytearray()
    for p, c in zip(points.reshape(-1, 3), rgb.reshape(-1, 3)):
        packed = struct.unpack("<f", struct.pack("<I", (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2])))[0]
        out += struct.pack("<fffxxxxfxxxxxxxxxxxx", p[0], p[1], p[2], packed)
    return bytes(out)


def test_cloud_data_match_a_per_point_reference_and_fields_like_depth_image_proc():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 2.0, (4, 5)).astype(np.float32)
    depth[0, 0] = depth[2, 3] = np.nan
    K = np.array([[50.0, 0.0, 2.2], [0.0, 40.0, 1.4], [0.0, 0.0, 1.0]])
    v, u = np.mgrid[0:4, 0:5]
    pts = np.stack([(u - 2.2) / 50.0 * depth, (v - 1.4) / 40.0 * depth, depth], -1).astype(np.float32)
    rgb = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    h, w, dense, step, data = conversions.cloud_data(depth, K, rgb, organized=True)
    assert (h, w, dense, step) == (4, 5, False, 32) and isinstance(data, array.array)
    got = np.frombuffer(data, np.uint8)
    ref = np.frombuffer(sensor_msgs_py_style_cloud(pts, rgb), np.uint8)
    assert got.shape == ref.shape
    xyz = got.view(np.float32).reshape(4, 5, 8)[..., :3]
    assert np.isnan(xyz[0, 0]).all() and np.isnan(xyz[2, 3]).all()  # NaN depth -> NaN point (depth_image_proc)
    finite = np.isfinite(depth)
    assert np.allclose(xyz[finite], pts[finite], rtol=1e-6, atol=1e-7)
    other = np.ones((4, 5, 32), bool)
    other[..., :12] = False
    assert np.array_equal(got.reshape(4, 5, 32)[other], ref.reshape(4, 5, 32)[other])  # padding and rgb bytes
    fields, step = conversions.cloud_fields(True)
    assert [(n, o, t) for n, o, t, _ in fields] == [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 16, 7)]
    assert conversions.pack_rgb(np.array([255, 0, 0], np.uint8)).view(np.uint32) == 0x00FF0000
    h, w, dense, step, data = conversions.cloud_data(depth, K, None, organized=False)
    assert (h, w, dense, step) == (1, 18, True, 16)
    dense_xyz = np.frombuffer(data, np.float32).reshape(-1, 4)[:, :3]
    assert np.allclose(dense_xyz, pts[finite], rtol=1e-6, atol=1e-7)  # row-major order of the valid pixels


def test_messages_take_the_buffers_without_a_copy():
    from sensor_msgs.msg import Image

    enc, step, data = conversions.depth_image_data(np.array([[1.5, np.nan]], np.float32))
    msg = conversions.attach_data(Image(height=1, width=2, encoding=enc, step=step), data)
    assert msg.data is data and not msg._check_fields  # the message's own setting is restored
    assert enc == "32FC1" and step == 8
    assert np.frombuffer(msg.data, "<f4")[0] == 1.5 and np.isnan(np.frombuffer(msg.data, "<f4")[1])


def test_exact_sync_out_of_order_and_missing_partner():
    s = Synchronizer(["image", "camera_info", "mask"], "exact", queue_size=3)
    assert s.add("image", 20, "i20") == []
    assert s.add("image", 10, "i10") == []  # out of order
    assert s.add("camera_info", 10, "c10") == []
    assert s.add("mask", 10, "m10") == [{"image": "i10", "camera_info": "c10", "mask": "m10"}]
    assert s.add("camera_info", 20, "c20") == [] and s.add("mask", 20, "m20")[0]["image"] == "i20"
    for t in range(100):  # camera_info never comes: queues stay bounded
        s.add("image", 1000 + t, t)
        s.add("mask", 1000 + t, t)
    assert len(s._policy.tuples) == 3 and s.stats.dropped["image"] >= 97


def test_exact_sync_counts_each_frame_that_lost_one_input_but_not_start_up():
    """The flood without a Fast DDS profile lost 29 of 90 images before the node, too few per period for the rate
    check (61 vs 86 messages) to name: every stamp whose other inputs came and went unpaired is counted, per
    missing topic, exactly; messages before the first set (subscriptions still matching) are not loss."""
    s = Synchronizer(["image", "camera_info", "mask"], "exact", queue_size=4)
    s.add("camera_info", 1, "c"), s.add("mask", 1, "m")  # start-up: image 1 never comes
    lost = {5, 9, 10, 17}  # images lost on the way
    for t in range(2, 30):
        s.add("camera_info", t, "c")
        s.add("mask", t, "m")
        if t not in lost:
            s.add("image", t, "i")
    s.add("image", 31, "i"), s.add("camera_info", 31, "c"), s.add("mask", 31, "m")
    assert s.stats.matched == 29 - len(lost) and s.stats.unpaired == {"image": len(lost), "camera_info": 0, "mask": 0}
    for t in range(40, 50):  # the mask never comes for 10 stamps (a segmenter at a lower rate): counted too
        s.add("image", t, "i"), s.add("camera_info", t, "c")
    s.add("image", 50, "i"), s.add("camera_info", 50, "c"), s.add("mask", 50, "m")
    assert s.stats.unpaired["mask"] == 10 and s.stats.unpaired["image"] == len(lost)


def test_exact_sync_with_repeated_stamps_and_a_lost_mask_pairs_the_newest():
    """The reported defect: equal stamps and a lost mask paired img1 with mask2 (message_filters keeps the
    newest message per topic and stamp)."""
    s = Synchronizer(["image", "mask"], "exact")
    assert s.add("image", 5, "img1") == []  # mask1 is lost
    assert s.add("image", 5, "img2") == []
    assert s.add("mask", 5, "mask2") == [{"image": "img2", "mask": "mask2"}]
    assert s.stats.dropped["image"] == 1


def test_approximate_sync_with_slop():
    s = Synchronizer(["image", "camera_info"], "approximate", slop=0.01, queue_size=5)
    assert s.add("image", 1_000_000_000, "i") == []
    # without rate bounds an image between 1.000 and 1.004 s could still make a tighter set: wait for the next
    assert s.add("camera_info", 1_004_000_000, "c") == []
    assert s.add("image", 2_000_000_000, "i2") == [{"image": "i", "camera_info": "c"}]
    # with a lower bound on the time between two messages of a topic, the set is provably optimal at once
    b = Synchronizer(["image", "camera_info"], "approximate", slop=0.01, min_period=0.02)
    assert b.add("image", 1_000_000_000, "i") == [] and b.add("camera_info", 1_004_000_000, "c") == [
        {"image": "i", "camera_info": "c"}]
    # 20 ms > slop, and ApproximateTime takes each topic in order: "i2" can no longer find a partner
    assert s.add("camera_info", 2_020_000_000, "late") == [] and s.stats.dropped["image"] == 1
    assert s.add("camera_info", 2_004_000_000, "reordered") == []  # queued in stamp order, "i2" is gone
    assert [st for st, _ in s._policy.deques[1]] == [2_004_000_000, 2_020_000_000]
    with pytest.raises(ValueError):
        Synchronizer(["a"], "fuzzy")


def _streams(n, rng, jitter_ms=4.0, delay_frames=None, drop=0.0, reorder=0.0, period_ms=33.3):
    """Arrival-ordered (topic, stamp, (topic, frame)) events of a 30 Hz camera with image/info/mask streams."""
    topics = ("image", "camera_info", "mask")
    delay_frames = delay_frames or {"image": 0, "camera_info": 0, "mask": 0}
    events = []
    for k in range(n):
        for t in topics:
            if rng.random() < drop:
                continue
            stamp = int((k * period_ms + rng.uniform(-jitter_ms, jitter_ms) * (t != "image")) * 1e6)
            arrival = k + delay_frames[t] + rng.uniform(0, 0.9) + (rng.random() < reorder) * 1.5
            events.append((arrival, t, stamp, (t, k)))
    events.sort()
    return topics, [(t, s, m) for _, t, s, m in events]


@pytest.mark.parametrize("case", ["jittered", "mask two frames late", "dropped", "reordered"])
def test_approximate_sync_pairs_every_message_with_its_own_frame(case):
    """Against the reference pairing (the frame each message belongs to): every set is one frame's messages,
    and every frame whose three messages arrived is output, whatever the delays, drops and reordering."""
    rng = np.random.default_rng(["jittered", "mask two frames late", "dropped", "reordered"].index(case))
    kw = {"jittered": {}, "mask two frames late": {"delay_frames": {"image": 0, "camera_info": 0, "mask": 2}},
          "dropped": {"drop": 0.1}, "reordered": {"reorder": 0.2}}[case]
    topics, events = _streams(300, rng, **kw)
    s = Synchronizer(list(topics), "approximate", slop=0.015, queue_size=10)  # under half a 30 Hz period
    out = [m for t, st, msg in events for m in s.add(t, st, msg)]
    frames = [{msg[1] for msg in m.values()} for m in out]
    assert all(len(f) == 1 for f in frames), [f for f in frames if len(f) > 1][:3]  # never across frames
    complete = {k for k in range(300) if sum(1 for _, _, (t, kk) in events if kk == k) == 3}
    got = [next(iter(f)) for f in frames]
    assert got == sorted(got) and len(got) == len(set(got))  # in order, each frame at most once
    lost = complete - set(got) - {298, 299}  # the last sets may still await the message that proves them
    if case == "reordered":
        # ApproximateTime takes each topic in order: a frame whose message came after the next frame's is
        # lost, never mispaired, and every message it did not use is counted as dropped
        assert sum(s.stats.dropped.values()) >= len(lost)
    else:
        assert not lost, sorted(lost)


def test_sync_invariants_hold_for_any_interleaving():
    """Property test: arbitrary stamps, topics, drops and order never raise, and the documented guarantees
    hold: each message at most once, sets never cross, a set spans at most the slop."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    topics = ["a", "b", "c"]
    event = st.tuples(st.sampled_from(topics), st.integers(0, 2_000_000_000))

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.lists(event, max_size=80), st.sampled_from(["exact", "approximate"]), st.integers(1, 6))
    def check(events, mode, queue):
        s = Synchronizer(topics, mode, slop=0.1, queue_size=queue)
        used, last = set(), {t: -1 for t in topics}
        for n, (t, stamp) in enumerate(events):
            jumps = s.stats.jumps
            sets = s.add(t, stamp, (t, stamp, n))
            if s.stats.jumps != jumps:  # stamps went back: a counted jump starts the order anew
                assert s.stats.jumps == jumps + 1 and len(sets) == 1
                last = {x: -1 for x in topics}
            for m in sets:
                stamps = [m[x][1] for x in topics]
                assert max(stamps) - min(stamps) <= (0 if mode == "exact" else 100_000_000)
                for x in topics:
                    assert m[x][2] not in used  # at most once
                    used.add(m[x][2])
                    assert m[x][1] > last[x]  # sets do not cross
                    last[x] = m[x][1]

    check()


def _frames(sync, stamps, topics=("image", "camera_info", "mask"), jitter=(0, 0, 0)):
    """Feed one message per topic per stamp (ns), offset by ``jitter`` (ns); the frames (stamps) output."""
    out = []
    for st in stamps:
        for t, dt in zip(topics, jitter):
            out += [m["image"] for m in sync.add(t, st + dt, st)]
    return out


@pytest.mark.parametrize("mode", ["exact", "approximate"])
def test_stamps_that_go_back_in_time_reset_the_sync_and_every_frame_is_served(mode):
    """The reported defect: after `bag play --loop`, a clock restart or one frame stamped in the future, every
    later message was dropped for good (0 of 30 frames served). Now each is served and the jump is counted."""
    kw = {"slop": 0.015, "min_period": 0.02} if mode == "approximate" else {}
    jitter = (0, 2_000_000, -3_000_000) if mode == "approximate" else (0, 0, 0)
    frames = [10**9 + k * 33_333_333 for k in range(8)]
    s = Synchronizer(["image", "camera_info", "mask"], mode, queue_size=10, **kw)
    looped = frames + frames + frames  # a bag of 8 frames played three times
    got = _frames(s, looped, jitter=jitter)
    last = 2 if mode == "approximate" else 0  # approximate without a later message may hold the newest set back
    assert got[:len(looped) - last] == looped[:len(looped) - last]
    assert s.stats.jumps == 2 and s.stats.received["mask"] == len(looped)
    assert np.abs(np.subtract(s.stats.last_jump, (frames[-1], frames[0]))).max() <= max(jitter)  # newest stamps
    future = Synchronizer(["image", "camera_info", "mask"], mode, queue_size=10, **kw)
    stamps = frames[:4] + [frames[3] + 10 * 10**9] + frames[4:]  # one frame stamped 10 s in the future
    assert _frames(future, stamps, jitter=jitter)[:len(stamps) - last] == stamps[:len(stamps) - last]
    assert future.stats.jumps == 1


def test_a_late_stray_message_is_dropped_not_taken_for_a_clock_jump():
    s = Synchronizer(["image", "camera_info"], "exact")
    assert _frames(s, [10, 20], topics=("image", "camera_info")) == [10, 20]
    assert s.add("image", 15, "stray") == [] and s.add("image", 30, 30) == []  # late, and a new frame's image
    assert s.add("camera_info", 30, 30) == [{"image": 30, "camera_info": 30}]
    assert s.stats.jumps == 0 and s.stats.dropped["image"] == 1 and s.stats.received["image"] == 4


def test_config_yaml_documents_exactly_the_declared_parameters():
    from bgprompt_ros.params import PARAMETERS, read_params_file

    params = yaml.safe_load((ROOT / "config" / "object_depth.yaml").read_text())["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        default = PARAMETERS[name][0]
        assert type(value) is type(default) or (isinstance(default, float) and isinstance(value, float)), name
        allowed = PARAMETERS[name][2]
        assert allowed is None or value in allowed, name
    assert read_params_file(ROOT / "config" / "object_depth.yaml") == params


@pytest.mark.parametrize("organized", [False, True])
def test_a_frame_without_any_valid_point_gives_an_empty_cloud(organized):
    """The reported defect: with rgb, the dense cloud of a frame with no valid point raised in cv2.cvtColor."""
    import pointcloud2
    from sensor_msgs.msg import PointCloud2, PointField

    depth = np.full((4, 5), np.nan, np.float32)
    rgb = np.zeros((4, 5, 3), np.uint8)
    K = np.array([[50.0, 0.0, 2.0], [0.0, 50.0, 1.5], [0.0, 0.0, 1.0]])
    msg = conversions.cloud_message(PointCloud2, PointField, None, depth, K, rgb, organized=organized,
                                    label=np.zeros((4, 5), np.int32), source=np.zeros((4, 5), np.uint8))
    assert (msg.height, msg.width) == ((4, 5) if organized else (1, 0))
    pts = pointcloud2.read_points(msg, field_names=["x", "y", "z", "rgb", "label"])
    assert len(pts) == (20 if organized else 0) and np.isnan(pts["z"]).all()


def test_a_dense_cloud_holds_finite_points_only():
    """is_dense promises finite points: a back-projection that overflows leaves those points out."""
    depth = np.array([[1.0, 2.0], [3.0e38, 1.0]], np.float32)  # x = (u - cx) / fx * z overflows for 3e38 m
    K = np.array([[0.5, 0.0, -5.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    h, w, dense, step, data = conversions.cloud_data(depth, K, None, organized=False)
    pts = np.frombuffer(data, np.float32).reshape(-1, 4)[:, :3]
    assert dense and w == 3 and np.isfinite(pts).all()
    assert np.allclose(pts[:, 2], [1.0, 2.0, 1.0])


def test_a_mono8_mask_of_object_ids_is_named_or_read_as_labels():
    """The reported defect: a mono8 mask with class ids 1 and 2 was silently merged into one object."""
    from bgprompt_core.frame.masks import split_mask
    from bgprompt_core.messages.decode import mask_values_note

    ids = np.zeros((20, 30), np.uint8)
    ids[2:8, 2:10], ids[10:18, 15:28] = 1, 2
    note = mask_values_note(ids)
    assert note and "[1, 2]" in note and "mask_labels" in note
    assert mask_values_note(ids * 255 // 2) is None  # 0/127/255: a binary-ish mask holding 255
    assert mask_values_note((ids > 0).astype(np.uint8)) is None  # 0/1 binary
    merged = split_mask(conversions.to_mask("mono8", ids), 0.5, 1)
    labels = split_mask(conversions.to_mask("mono8", ids, labels=True), 0.5, 1)
    assert len(merged) == 1 and sorted(o.id for o in labels) == [1, 2]
    assert [o.pixels for o in sorted(labels, key=lambda o: o.id)] == [48, 104]


@pytest.mark.parametrize("with_rgb,organized", [(True, True), (False, True), (True, False), (False, False)])
def test_label_and_source_fields_decode_with_an_independent_reader(with_rgb, organized):
    """The `pointcloud2` package reads the fields back by name from the field table alone."""
    import pointcloud2
    from sensor_msgs.msg import PointCloud2, PointField

    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 2.0, (6, 7)).astype(np.float32)
    depth[1, 2] = np.nan
    label = rng.integers(0, 70000, (6, 7)).astype(np.int64)  # beyond uint16 on purpose
    source = rng.integers(0, 3, (6, 7)).astype(np.uint8)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8) if with_rgb else None
    K = np.array([[50.0, 0.0, 3.0], [0.0, 50.0, 2.5], [0.0, 0.0, 1.0]])
    h, w, dense, step, data = conversions.cloud_data(depth, K, rgb, organized=organized, label=label, source=source)
    fields, step2 = conversions.cloud_fields(with_rgb, True)
    assert step == step2 == 32
    msg = conversions.attach_data(PointCloud2(height=h, width=w, is_bigendian=False, point_step=step, row_step=step * w,
                                     is_dense=dense, fields=[PointField(name=n, offset=o, datatype=t, count=c)
                                                             for n, o, t, c in fields]), data)
    got = pointcloud2.read_points(msg, field_names=["z", "label", "source"])
    sel = np.ones(depth.shape, bool) if organized else np.isfinite(depth)
    assert np.array_equal(got["label"].astype(np.int64), label[sel].reshape(-1))
    assert np.array_equal(got["source"], source[sel].reshape(-1))
    assert np.allclose(got["z"], depth[sel].reshape(-1), equal_nan=True)
    with pytest.raises(conversions.ConversionError, match="uint32"):
        conversions.cloud_data(depth, K, None, organized=True, label=-label - 1)


def test_intrinsics_come_from_p_like_image_geometry_and_distortion_is_named():
    k = [100.0, 0, 50, 0, 100.0, 40, 0, 0, 1]
    p = [90.0, 0, 48, 0, 0, 91.0, 39, 0, 0, 0, 1, 0]  # the rectified image's projection
    K = conversions.camera_matrix(k, 100, 80, (80, 100), p)
    assert np.array_equal(K, np.array([[90.0, 0, 48], [0, 91.0, 39], [0, 0, 1]]))
    assert np.array_equal(conversions.camera_matrix(k, 100, 80, (80, 100), [0.0] * 12), np.array(k).reshape(3, 3))
    with pytest.raises(conversions.ConversionError, match="NaN"):
        conversions.camera_matrix(k, 100, 80, (80, 100), [float("nan")] + p[1:])
    assert conversions.distortion_note("plumb_bob", [0.0] * 5) is None and conversions.distortion_note("", []) is None
    note = conversions.distortion_note("plumb_bob", [0.1, -0.02, 0, 0, 0])
    assert "rectified" in note and "plumb_bob" in note and "0.1" in note


def test_one_frame_decoder_for_node_and_bag_eval_checks_before_decoding():
    from types import SimpleNamespace as NS

    info = NS(k=[100.0, 0, 1.5, 0, 100.0, 1.5, 0, 0, 1], p=[0.0] * 12, d=[], distortion_model="", width=4, height=4)
    huge = NS(encoding="rgb8", height=5000, width=4000, step=12000, is_bigendian=0, data=b"")  # no pixels at all
    with pytest.raises(conversions.ConversionError, match="exceeds 4096x4096"):
        conversions.decode_frame({"image": huge, "camera_info": info})
    yuv = NS(encoding="yuv422", height=4, width=4, step=8, is_bigendian=0, data=bytes(32))
    with pytest.raises(conversions.ConversionError, match="not a colour encoding"):
        conversions.decode_frame({"image": yuv, "camera_info": info})
    img = NS(encoding="bgr8", height=4, width=4, step=12, is_bigendian=0, data=bytes(range(48)))
    depth = NS(encoding="16UC1", height=4, width=4, step=8, is_bigendian=0,
               data=np.array([[0, 500, 1000, 1500]] * 4, "<u2").tobytes())
    f = conversions.decode_frame({"image": img, "camera_info": info, "depth": depth}, sensor_key="depth")
    assert f.rgb[0, 0].tolist() == [2, 1, 0] and f.mask is None and f.truth is None
    assert np.isnan(f.sensor[0, 0]) and f.sensor[0, 1] == pytest.approx(0.5)  # mm -> metres at the boundary


def test_conversions_round_trip_or_fail_with_the_documented_error_for_any_input():
    """Property test: any encoding, size, step padding, endianness and data length either decodes to exactly the
    array that was encoded, or raises ConversionError; nothing else escapes."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    encodings = sorted(conversions.ENCODINGS) + ["yuv422", "64FC1", ""]

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(st.sampled_from(encodings), st.integers(0, 9), st.integers(0, 9), st.integers(-3, 9), st.booleans(),
           st.integers(-4, 4), st.integers(0, 2**32 - 1))
    def check(enc, h, w, pad, big, extra, seed):
        rng = np.random.default_rng(seed)
        known = enc in conversions.ENCODINGS
        dtype, ch = conversions.ENCODINGS[enc] if known else (np.uint8, 1)
        item = np.dtype(dtype).itemsize
        row = w * ch * item
        step = max(row + pad, 0)
        src = rng.integers(0, 256, max(h * step + extra, 0), dtype=np.uint8)
        valid = known and h > 0 and w > 0 and step >= row and len(src) >= step * (h - 1) + row
        try:
            arr = conversions.image_to_array(enc, h, w, step, big, src.tobytes())
        except conversions.ConversionError:
            assert not valid
            return
        assert valid
        wire = np.dtype(dtype).newbyteorder(">" if big else "<")
        rows = [src[r * step:r * step + row].view(wire) for r in range(h)]
        expect = np.stack(rows).reshape((h, w, ch) if ch > 1 else (h, w))
        assert np.array_equal(arr.astype(np.float64), expect.astype(np.float64), equal_nan=True)
        for convert in (conversions.to_rgb, conversions.to_mask, conversions.to_sensor_depth):  # each accepts or refuses, never crashes
            try:
                out = convert(enc, arr)
            except conversions.ConversionError:
                continue
            assert out.shape[:2] == (h, w)

    check()


def test_old_bag_module_paths_import_with_a_warning_naming_the_new_module():
    """Issue 30: bag.py, bag_live.py and bag_writer.py moved into bgprompt_ros/bags/; the old paths still import."""
    import importlib
    import sys

    from bgprompt_ros.bags import evaluate, live, make, report, writer

    for old in ("bgprompt_ros.bag", "bgprompt_ros.bag_live", "bgprompt_ros.bag_writer"):
        sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match="bgprompt_ros.bag_live moved to bgprompt_ros.bags.live"):
        assert importlib.import_module("bgprompt_ros.bag_live") is live
    with pytest.warns(DeprecationWarning, match="bgprompt_ros.bag_writer moved to bgprompt_ros.bags.writer"):
        from bgprompt_ros.bag_writer import BagWriter
    assert BagWriter is writer.BagWriter
    with pytest.warns(DeprecationWarning, match="bgprompt_ros.bag.eval_bag moved to bgprompt_ros.bags.evaluate"):
        from bgprompt_ros.bag import eval_bag, make_bag, summarize_rows, typestore
    assert (eval_bag, make_bag, summarize_rows) == (evaluate.eval_bag, make.make_bag, report.summarize_rows)
    assert typestore is make.typestore
    with pytest.raises(AttributeError, match="bgprompt_ros.bags.evaluate"):
        importlib.import_module("bgprompt_ros.bag").no_such_name
    from bgprompt_ros.cli import register  # the entry point keeps its name (setup.py: bag = bgprompt_ros.cli:register)
    from bgprompt_ros.bags.cli import register as verbs
    assert register is verbs
