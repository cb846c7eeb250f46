"""Declare one ROS parameter per field of a config dataclass (descriptions, ranges, types),
and apply or refuse parameter changes at run time."""
import dataclasses

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter

from dmn_localizer.config import field_specs, RENAMED_PARAMETERS, ros_name
from dmn_localizer.util.errors import UserError


def declare_config(node, config_cls):
    """Declare the parameters of ``config_cls`` on ``node`` and return the filled config.

    Values come from the YAML parameter file / command line (``--ros-args``), defaults from the
    dataclass. An integer given for a float parameter (``update_min_d: 1``) is taken as that
    float; a value of another type or out of range is a :class:`UserError` (one line, the range
    in the message). A value
    given under a name in :data:`RENAMED_PARAMETERS` is used for the new name (unless that is
    given too), with one deprecation warning. Values given for parameters the node does not
    have are named in one warning.
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
        given = overrides.get(name)
        if given is not None and isinstance(default, float) \
                and given.type_ == Parameter.Type.INTEGER:
            overrides[name] = Parameter(name, value=float(given.value))
        try:
            node.declare_parameter(name, default, desc)
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            # Humble's exceptions carry (message, parameter) as two args, later ones one string
            message = ' '.join(str(exc.args[0] if exc.args else exc).split())
            raise UserError(f'parameter {name}: {message}') from None
    unknown = sorted(n for n in overrides if not node.has_parameter(n)
                     and n not in RENAMED_PARAMETERS and not n.startswith('qos_overrides.'))
    if unknown:   # rclpy keeps them unused, without a word (AMCL's names among them)
        node.get_logger().warning(f'not parameters of this node, ignored: {", ".join(unknown)}')
    return read_config(node, config_cls)


def read_config(node, config_cls):
    """The config from the node's current parameter values."""
    return config_cls(**{f.name: node.get_parameter(ros_name(f)).value
                         for f in dataclasses.fields(config_cls)})


def on_parameter_changes(node, config_cls, runtime, apply, configured=lambda: True):
    """Validate and apply ``ros2 param set`` (set_parameters) changes to the config.

    Fields named in ``runtime`` apply at once: ``apply(changes)`` gets {field name: value} of
    one request (ranges and types already checked by rclpy) and returns None, or a reason to
    refuse them all. The others are read when the node is configured: changing one is refused
    with a reason while ``configured()``, and takes effect at the next configure otherwise.
    Parameters that are not config fields (``use_sim_time``) are left to rclpy.
    """
    field_names = {ros_name(f): f.name for f in dataclasses.fields(config_cls)}

    def callback(params):
        changes = {}
        for p in params:
            name = field_names.get(p.name)
            if name is None:
                continue
            if name not in runtime and configured():
                return SetParametersResult(
                    successful=False, reason=f'{p.name} is read at configure: set it in the '
                    'parameter file, or deactivate, cleanup, set it, configure, activate')
            changes[name] = p.value
        if changes and configured():
            reason = apply(changes)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)
    node.add_on_set_parameters_callback(callback)
