"""ROS processes that are not products: the bag player and estimate recorder of live replay, the
latency probe of the benchmark."""
