"""Helpers to run the nodes *in the test process*: construct the node objects with rclpy and
call their callbacks directly (no spinning, no other process), recording what they log and
publish. Used by the robustness and fuzz tests."""
import contextlib
import os

import numpy as np
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image

from conftest import ros_test_env
from dmn_localizer.util.processes import localhost_discovery


@contextlib.contextmanager
def ros_context(args=None):
    """An rclpy context on an isolated domain with localhost-only discovery; ``args``: the
    context's command line (``['--ros-args', ...]``: parameter files, remaps)."""
    env = ros_test_env()
    saved = {k: os.environ.get(k) for k in ('ROS_AUTOMATIC_DISCOVERY_RANGE',
                                            'ROS_LOCALHOST_ONLY')}
    localhost_discovery(os.environ)
    context = rclpy.Context()
    rclpy.init(args=args, context=context, domain_id=int(env['ROS_DOMAIN_ID']))
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LogRecorder:
    """Stands in for a node's logger: records (level, message)."""

    def __init__(self):
        self.records = []

    def _log(self, level):
        def log(message, **kwargs):
            self.records.append((level, str(message)))
            return True
        return log

    def __getattr__(self, name):
        if name in ('debug', 'info', 'warning', 'warn', 'error', 'fatal'):
            return self._log('warning' if name == 'warn' else name)
        raise AttributeError(name)

    def messages(self, level=None, containing=''):
        return [m for lv, m in self.records if (level is None or lv == level)
                and containing in m]

    def clear(self):
        self.records.clear()


class Tee:
    """Wraps a publisher: records every message and still publishes it (so serialisation of
    whatever the node produces is exercised)."""

    def __init__(self, publisher):
        self.publisher = publisher
        self.msgs = []

    def publish(self, msg):
        self.msgs.append(msg)
        self.publisher.publish(msg)

    def __getattr__(self, name):
        return getattr(self.publisher, name)


def write_tiny_model_and_map(directory, poses):
    """A tiny untrained model (seed 0) and a map of random 32x32 views at ``poses`` (seed 0)
    in ``directory``: ``tiny.safetensors`` and ``map.dmnmap``. Returns ``directory``."""
    import torch

    from dmn_localizer.mapping.view_map import ViewMap
    from dmn_localizer.model.config import DMNConfig
    from dmn_localizer.model.dmn import DMN
    from dmn_localizer.model.io import save_model
    torch.manual_seed(0)
    save_model(DMN(DMNConfig()), directory / 'tiny.safetensors')
    rng = np.random.default_rng(0)
    vm = ViewMap()
    for pose in poses:
        vm.add(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), pose)
    vm.save(directory / 'map.dmnmap')
    return directory


def make_node(cls, context, **params):
    """Construct ``cls`` (LocalizerNode or MapperNode) with parameter overrides; its logger
    is replaced by a :class:`LogRecorder` (``node.log``) after construction."""
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    node = cls(context=context, parameter_overrides=overrides)
    node.log = LogRecorder()
    node.get_logger = lambda: node.log
    return node


def tee_publishers(node, names):
    for name in names:
        setattr(node, name, Tee(getattr(node, name)))


def subscription_callback(node, msg_type):
    """The callback of the node's (only) subscription of ``msg_type``."""
    subs = [s for s in node.subscriptions if s.msg_type is msg_type]
    assert len(subs) == 1, subs
    return subs[0].callback


def image_callback(node):
    subs = [s for s in node.subscriptions if s.msg_type in (Image, CompressedImage)]
    assert len(subs) == 1
    return subs[0].callback


def stamp(msg, t):
    msg.header.stamp.sec = int(t)
    msg.header.stamp.nanosec = int(round((t - int(t)) * 1e9)) % 1_000_000_000
    return msg


def rgb_msg(rgb, t, encoding='rgb8'):
    rgb = np.ascontiguousarray(rgb, np.uint8)
    h, w = rgb.shape[:2]
    return stamp(Image(height=h, width=w, encoding=encoding, step=w * 3, data=rgb.tobytes()), t)
