"""dmn_localizer: visual localization against a learned view-embedding map (DMN, IROS 2020).

The package is split into a pure core (torch/numpy only: model, filter, map, geometry, data)
and thin ROS 2 adapters in :mod:`dmn_localizer.nodes`. Importing the package has no side
effects and does not import rclpy or torch.
"""

__version__ = '0.1.0'
