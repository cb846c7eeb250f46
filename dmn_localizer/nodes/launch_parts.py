"""What the launch files (``launch/*.launch.py``) share: their argument declarations, the
mapper and localizer nodes, RViz and the tf remappings.

``ros2 launch`` loads a launch file by path from the installed ``share/dmn_localizer/launch``;
this module is imported from the installed package. ``launch``, ``launch_ros`` and
``ament_index_python`` exist only on a ROS install, so they are imported inside the functions
(and there, in the tests, ``test/launch_stub.py`` stands in for them).

A launch argument that sets a node parameter (``map_file``, ``model``, ``autostart``) takes
the parameter's description from :mod:`dmn_localizer.config`.
"""
from dataclasses import fields
import os

from dmn_localizer.config import LocalizerConfig, MapperConfig

PACKAGE = 'dmn_localizer'
NODE_CONFIGS = {'mapper': MapperConfig, 'localizer': LocalizerConfig}

# tf relative so a namespaced robot keeps its own <ns>/tf (as nav2); RViz's tools publish in
# the namespace
TF_REMAPS = [('/tf', 'tf'), ('/tf_static', 'tf_static')]
RVIZ_REMAPS = TF_REMAPS + [('/initialpose', 'initialpose'), ('/goal_pose', 'goal_pose'),
                           ('/clicked_point', 'clicked_point')]

# the launch arguments that are not node parameters: name -> (default, description)
ARGUMENTS = {
    'use_sim_time': ('false', 'Use simulation (/clock) time'),
    'rviz': ('false', 'Start RViz (config/dmn_localizer.rviz) in the namespace'),
    'namespace': ('', 'Namespace for the nodes, their topics and tf'),
    'use_respawn': ('false', 'Restart a node if it crashes'),
    'log_level': ('info', 'Log level'),
}


def share_path(*parts):
    """A path in the installed package's share directory (``config``, ``launch``, ...)."""
    from ament_index_python.packages import get_package_share_directory
    return os.path.join(get_package_share_directory(PACKAGE), *parts)


def declare(name, description=None):
    """The declaration of launch argument ``name`` of :data:`ARGUMENTS` (``description``
    replaces its description where a launch file means something else by it)."""
    from launch.actions import DeclareLaunchArgument
    default, desc = ARGUMENTS[name]
    return DeclareLaunchArgument(name, default_value=default, description=description or desc)


def declare_parameter(node, name, description=None):
    """The declaration of a launch argument that sets parameter ``name`` of ``node``
    ('mapper' or 'localizer'): its default and description are the parameter's."""
    from launch.actions import DeclareLaunchArgument
    (f,) = [f for f in fields(NODE_CONFIGS[node]) if f.name == name]
    default = str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
    return DeclareLaunchArgument(name, default_value=default,
                                 description=description or f.metadata['description'])


def declare_params_file(node, name='params_file'):
    """The declaration of the argument naming ``node``'s parameter YAML (default: the
    installed ``config/<node>.yaml``)."""
    from launch.actions import DeclareLaunchArgument
    return DeclareLaunchArgument(
        name, default_value=share_path('config', f'{node}.yaml'),
        description=f'Parameter YAML for the {node} node (root key /**/{node}: so it '
                    'applies in any namespace)')


def launch_bool(name):
    """Launch argument ``name`` as a bool parameter value."""
    from launch.substitutions import LaunchConfiguration
    from launch_ros.parameter_descriptions import ParameterValue
    return ParameterValue(LaunchConfiguration(name), value_type=bool)


def log_arguments():
    """The node's command-line arguments setting its log level from ``log_level``."""
    from launch.substitutions import LaunchConfiguration
    return ['--ros-args', '--log-level', LaunchConfiguration('log_level')]


def respawn_options():
    """``Node`` keyword arguments: restart after 2 s if ``use_respawn``."""
    from launch.substitutions import LaunchConfiguration
    return {'respawn': LaunchConfiguration('use_respawn'), 'respawn_delay': 2.0}


def dmn_node(node, params_file='params_file', autostart=None):
    """The mapper or localizer node (``node``: 'mapper' or 'localizer'): parameters from the
    YAML named by launch argument ``params_file``, then ``use_sim_time``, ``autostart`` (the
    launch argument unless given), and ``map_file`` and ``model`` from the launch arguments
    where those are not empty (empty: the YAML's values hold); log level, respawn, tf in the
    namespace. An ``OpaqueFunction``: which parameters the node gets depends on the values."""
    from launch.actions import OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    autostart = launch_bool('autostart') if autostart is None else autostart

    def build(context):
        overrides = {'use_sim_time': launch_bool('use_sim_time'), 'autostart': autostart}
        for name in ('map_file', 'model'):
            value = LaunchConfiguration(name).perform(context)
            if value:
                overrides[name] = value
        return [Node(package=PACKAGE, executable=f'{node}_node', name=node, output='screen',
                     arguments=log_arguments(),
                     parameters=[LaunchConfiguration(params_file), overrides],
                     remappings=TF_REMAPS, **respawn_options())]
    return OpaqueFunction(function=build)


def rviz_node():
    """RViz with ``config/dmn_localizer.rviz`` if launch argument ``rviz``, its tools'
    topics and tf in the namespace."""
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    return Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                condition=IfCondition(LaunchConfiguration('rviz')),
                arguments=['-d', share_path('config', 'dmn_localizer.rviz')],
                parameters=[{'use_sim_time': launch_bool('use_sim_time')}],
                remappings=RVIZ_REMAPS)


def in_namespace(*entities):
    """``entities`` in the namespace of launch argument ``namespace``."""
    from launch.actions import GroupAction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import PushRosNamespace
    return GroupAction([PushRosNamespace(LaunchConfiguration('namespace')), *entities])


def node_with_rviz(node):
    """The launch description of mapping.launch.py and localize.launch.py: one node
    (``node``: 'mapper' or 'localizer') and optionally RViz, namespace-ready."""
    from launch import LaunchDescription
    return LaunchDescription([
        declare_parameter(node, 'map_file'),
        declare_parameter(node, 'model'),
        declare_params_file(node),
        declare('use_sim_time'),
        declare('rviz'),
        declare('namespace'),
        declare_parameter(node, 'autostart'),
        declare('use_respawn'),
        declare('log_level'),
        in_namespace(dmn_node(node), rviz_node()),
    ])
