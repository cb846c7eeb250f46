"""The localizer's last pose kept across restarts (nav2 AMCL keeps it in its parameters; a
file survives the process). No rclpy here.

The file is YAML: ``frame_id``, ``x``, ``y``, ``yaw`` (map_from_base) and ``covariance`` (the
3x3 of x, y, yaw, row-major), written atomically (:mod:`dmn_localizer.util.atomic`).
"""
import math
import os
from pathlib import Path

import numpy as np
import yaml

from dmn_localizer.util.atomic import atomic_path


def default_pose_file(node_name):
    """``$ROS_HOME/dmn_localizer/<node>_pose.yaml`` (ROS_HOME defaults to ``~/.ros``, as ROS
    logs); ``node_name`` is the fully qualified name, so namespaced robots do not share it."""
    home = os.environ.get('ROS_HOME') or os.path.join(os.path.expanduser('~'), '.ros')
    stem = node_name.strip('/').replace('/', '_') or 'localizer'
    return Path(home) / 'dmn_localizer' / f'{stem}_pose.yaml'


def save_pose(path, frame_id, mean, cov):
    """Write the pose (3,) and its covariance (3, 3) to ``path`` atomically."""
    data = {'frame_id': str(frame_id), 'x': float(mean[0]), 'y': float(mean[1]),
            'yaw': float(mean[2]),
            'covariance': [float(v) for v in np.asarray(cov, np.float64).reshape(9)]}
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))


def load_pose(path):
    """(frame_id, mean (3,), cov (3, 3)) from ``path``; ValueError when the file is not a
    saved pose (OSError when it cannot be read)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
        mean = np.array([float(data['x']), float(data['y']), float(data['yaw'])])
        cov = np.array([float(v) for v in data['covariance']]).reshape(3, 3)
        frame_id = str(data['frame_id'])
    except (yaml.YAMLError, TypeError, KeyError, ValueError) as exc:
        raise ValueError(f'{path}: not a saved pose ({exc})') from None
    if not (np.isfinite(mean).all() and np.isfinite(cov).all()) or abs(mean[2]) > 4 * math.pi:
        raise ValueError(f'{path}: not a saved pose (values out of range)')
    return frame_id, mean, cov
