"""Declare one ROS parameter per field of a config dataclass (descriptions, ranges, types),
and apply or refuse parameter changes at run time."""
import dataclasses

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.parameter import Parameter

from dmn_localizer.config import field_specs, RENAMED_PARAMETERS, ros_name


def declare_config(node, config_cls):
    """Declare the parameters of ``config_cls`` on ``node`` and return the filled config.

    Values come from the YAML parameter file / command line (``--ros-args``), defaults from the
    dataclass. Out-of-range values are refused by rclpy with the range in the message. A value
    given under a name in :data:`RENAMED_PARAMETERS` is used for the new name (unless that is
    given too), with one deprecation warning.
    """
    overrides = getattr(node, '_parameter_overrides', {})  # rclpy: file and command line
    for old, new in RENAMED_PARAMETERS.items():
        if old in overrides:
            if new in overrides:
                node.get_logger().warning(f'parameter {old} is deprecated and ignored: '
                                          f'{new} is given')
            else:
                node.get_logger().warning(f'parameter {old} is deprecated: use {new}')
                overrides[new] = Parameter(new, value=overrides[old].value)
    for name, default, description, rng in field_specs(config_cls):
        desc = ParameterDescriptor(description=description)
        if rng is not None and isinstance(default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(rng[0]),
                                                            to_value=float(rng[1]))]
        elif rng is not None and isinstance(default, int) and not isinstance(default, bool):
            desc.integer_range = [IntegerRange(from_value=int(rng[0]), to_value=int(rng[1]),
                                               step=1)]
        node.declare_parameter(name, default, desc)
    return read_config(node, config_cls)


def read_config(node, config_cls):
    """The config from the node's current parameter values."""
    return config_cls(**{f.name: node.get_parameter(ros_name(f)).value
                         for f in dataclasses.fields(config_cls)})


def refuse_changes(node, names):
    """Parameters in ``names`` are read once at start: refuse changes at run time."""
    names = set(names)

    def callback(params):
        changed = [p.name for p in params if p.name in names]
        if changed:
            return SetParametersResult(successful=False,
                                       reason=f'{", ".join(changed)} can only be set at start')
        return SetParametersResult(successful=True)
    node.add_on_set_parameters_callback(callback)
