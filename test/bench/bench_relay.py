"""The latency floor for ``make bench``: a bare rclpy relay with the node's name, inputs and output sizes.

It subscribes to image / camera_info / mask like object_depth_node and, on each image, publishes a 32FC1
depth image, the camera info and a PointCloud2 of the same sizes as the node's (organized: every pixel;
dense: the mask's pixels), from buffers allocated once: no inference, no geometry. What is left is DDS
transport and rclpy (de)serialization, which the node cannot avoid either.
"""
from __future__ import annotations

import sys

import numpy as np


def main(cloud_mode: str) -> None:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

    from bgprompt_ros.conversions import attach_data, byte_buffer, cloud_fields

    rclpy.init()
    node = rclpy.create_node("object_depth")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {"depth": node.create_publisher(Image, "object_depth", qos),
            "info": node.create_publisher(CameraInfo, "object_depth/camera_info", qos),
            "cloud": node.create_publisher(PointCloud2, "object_points", qos)}
    fields, step = cloud_fields(True)
    state: dict = {"mask_pixels": 0, "info": CameraInfo(), "buffers": {}}

    def buffer(n: int):
        if n not in state["buffers"]:
            state["buffers"][n] = byte_buffer(n)[0]
        return state["buffers"][n]

    def on_mask(msg: Image) -> None:
        state["mask_pixels"] = int(np.count_nonzero(np.frombuffer(msg.data, np.uint8)))

    def on_image(msg: Image) -> None:
        h, w = msg.height, msg.width
        pubs["depth"].publish(attach_data(Image(header=msg.header, height=h, width=w, encoding="32FC1", step=4 * w),
                                          buffer(h * w * 4)))
        pubs["info"].publish(CameraInfo(header=msg.header, height=h, width=w, k=state["info"].k))
        n = h * w if cloud_mode == "organized" else state["mask_pixels"]
        ch, cw = (h, w) if cloud_mode == "organized" else (1, n)
        pubs["cloud"].publish(attach_data(PointCloud2(
            header=msg.header, height=ch, width=cw, point_step=step, row_step=step * cw, is_dense=cloud_mode != "organized",
            fields=[PointField(name=f, offset=o, datatype=t, count=c) for f, o, t, c in fields]), buffer(n * step)))

    node.create_subscription(Image, "mask", on_mask, qos)
    node.create_subscription(CameraInfo, "camera_info", lambda m: state.update(info=m), qos)
    node.create_subscription(Image, "image", on_image, qos)
    try:
        rclpy.spin(node)  # rclpy's own SIGINT handler shuts the context down, which ends spin
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "organized")
