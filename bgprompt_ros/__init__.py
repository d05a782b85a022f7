"""bgprompt_ros: the thin rclpy layer over bgprompt_core (the object-depth node arrives here)."""
