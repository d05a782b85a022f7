"""visualization_msgs/MarkerArray of per-object summaries (bgprompt_core.frame.object_summary) for RViz and planners."""
from __future__ import annotations

from bgprompt_core.frame.object_summary import ObjectSummary


def object_markers(summaries: list[ObjectSummary], header, units: str = "metres"):
    """DELETEALL, then per object: its oriented box (ns "box"), centroid (ns "centroid") and a label (ns "label").

    Marker ids are the object ids, so a planner can match markers with the cloud's ``label`` field.
    """
    from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    out = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
    for s in summaries:
        hue = (s.id * 0.618034) % 1.0
        color = ColorRGBA(r=float(abs(hue * 6 - 3) - 1), g=float(2 - abs(hue * 6 - 2)), b=float(2 - abs(hue * 6 - 4)),
                          a=0.5)
        color.r, color.g, color.b = (min(max(c, 0.0), 1.0) for c in (color.r, color.g, color.b))
        q = Quaternion(x=float(s.box_quaternion[0]), y=float(s.box_quaternion[1]), z=float(s.box_quaternion[2]),
                       w=float(s.box_quaternion[3]))
        box = Marker(header=header, ns="box", id=s.id, type=Marker.CUBE, action=Marker.ADD,
                     pose=Pose(position=Point(x=float(s.box_centre[0]), y=float(s.box_centre[1]),
                                              z=float(s.box_centre[2])), orientation=q),
                     scale=Vector3(x=float(max(s.box_extents[0], 1e-3)), y=float(max(s.box_extents[1], 1e-3)),
                                   z=float(max(s.box_extents[2], 1e-3))), color=color)
        c = Point(x=float(s.centroid[0]), y=float(s.centroid[1]), z=float(s.centroid[2]))
        centroid = Marker(header=header, ns="centroid", id=s.id, type=Marker.SPHERE, action=Marker.ADD,
                          pose=Pose(position=c, orientation=Quaternion(w=1.0)),
                          scale=Vector3(x=0.01, y=0.01, z=0.01), color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0))
        text = f"{s.id}: {s.points} pts" + (f", {100 * s.sensor_fraction:.0f}% sensor" if s.sensor_fraction is not None
                                             else "") + ("" if units == "metres" else " (relative)")
        label = Marker(header=header, ns="label", id=s.id, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                       pose=Pose(position=Point(x=c.x, y=c.y - float(s.box_extents[0]) / 2 - 0.02, z=c.z),
                                 orientation=Quaternion(w=1.0)),
                       scale=Vector3(z=0.02), color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0), text=text)
        out.markers += [box, centroid, label]
    return out
