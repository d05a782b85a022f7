"""sensor_msgs decoding, time synchronization and bag frames, ROS-free."""
