"""ROS 2 bags without rosbag2_py (the `rosbags` library): make.py (a bag from renders), writer.py (a writer that
survives a full disk), evaluate.py (the node's pipeline over a bag), report.py (its summary files), live.py (play
and record over rclpy), cli.py (the `bgprompt bag ...` verbs)."""
