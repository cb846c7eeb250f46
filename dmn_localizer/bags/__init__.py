"""rosbag2 writing (simulated runs) and reading (a user's recordings) with ``rosbags``.

Pure Python: no rclpy. Message types and type hashes come from rosbags' ROS 2 Kilted type
store, so the bags replay with ``ros2 bag`` on a ROS install.
"""
