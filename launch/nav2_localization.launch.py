"""Drop-in for nav2_bringup's localization_launch.py: dmn_localizer instead of amcl, managed by
nav2's ``lifecycle_manager_localization``.

    ros2 launch dmn_localizer nav2_localization.launch.py map_file:=/path/map.dmnmap \\
        [map:=/path/occupancy.yaml] [namespace:=robot1] [use_sim_time:=true] [autostart:=true]

Include it where nav2's bringup_launch.py includes localization_launch.py; the arguments that
file passes (namespace, map, use_sim_time, autostart, use_respawn, log_level) mean the same
here. ``params_file`` (nav2's YAML) is not read: the localizer takes ``localizer_params_file``
and the map_server only ``yaml_filename``; ``use_composition`` and ``container_name`` do not
apply (Python nodes are not components). The lifecycle manager drives the nodes (the localizer
gets ``autostart: false``) with ``bond_timeout: 0.0``: rclpy has no bond, so the manager does
not wait for a heartbeat from the localizer. The map_server (nav2_map_server) starts and is
managed only when ``map`` names an occupancy grid, which costmaps and planners need; the
localizer itself uses only its ``.dmnmap``.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.parameter_descriptions import ParameterValue

TF_REMAPS = [('/tf', 'tf'), ('/tf_static', 'tf_static')]  # <ns>/tf, as nav2


def generate_launch_description():
    share = get_package_share_directory('dmn_localizer')
    occupancy_map = LaunchConfiguration('map')
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    autostart = ParameterValue(LaunchConfiguration('autostart'), value_type=bool)
    log_args = ['--ros-args', '--log-level', LaunchConfiguration('log_level')]
    respawn = {'respawn': LaunchConfiguration('use_respawn'), 'respawn_delay': 2.0}
    with_map = PythonExpression(["'", occupancy_map, "' != ''"])

    def lifecycle_manager(node_names, condition):
        return Node(package='nav2_lifecycle_manager', executable='lifecycle_manager',
                    name='lifecycle_manager_localization', output='screen',
                    condition=condition, arguments=log_args,
                    parameters=[{'use_sim_time': use_sim_time, 'autostart': autostart,
                                 'node_names': node_names, 'bond_timeout': 0.0}])

    return LaunchDescription([
        DeclareLaunchArgument('namespace', default_value='',
                              description='Top-level namespace'),
        DeclareLaunchArgument('map_file', default_value='',
                              description='dmn_localizer map (.dmnmap, from the mapper)'),
        DeclareLaunchArgument('map', default_value='',
                              description='Occupancy grid YAML for nav2_map_server (empty: no '
                                          'map_server)'),
        DeclareLaunchArgument('model', default_value='',
                              description='Model weights (.safetensors); empty = shipped model'),
        DeclareLaunchArgument('localizer_params_file',
                              default_value=os.path.join(share, 'config', 'localizer.yaml'),
                              description='Parameter YAML for the localizer (root key '
                                          '/**/localizer:)'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use simulation (Gazebo) clock if true'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='Lifecycle manager configures and activates the '
                                          'nodes at start'),
        DeclareLaunchArgument('use_respawn', default_value='false',
                              description='Respawn a node that crashes'),
        DeclareLaunchArgument('log_level', default_value='info', description='Log level'),
        GroupAction([
            PushRosNamespace(LaunchConfiguration('namespace')),
            Node(package='nav2_map_server', executable='map_server', name='map_server',
                 output='screen', condition=IfCondition(with_map), arguments=log_args,
                 parameters=[{'use_sim_time': use_sim_time, 'yaml_filename': occupancy_map}],
                 remappings=TF_REMAPS, **respawn),
            Node(package='dmn_localizer', executable='localizer_node', name='localizer',
                 output='screen', arguments=log_args,
                 parameters=[LaunchConfiguration('localizer_params_file'),
                             {'use_sim_time': use_sim_time, 'autostart': False,
                              'map_file': LaunchConfiguration('map_file'),
                              'model': LaunchConfiguration('model')}],
                 remappings=TF_REMAPS, **respawn),
            lifecycle_manager(['map_server', 'localizer'], IfCondition(with_map)),
            lifecycle_manager(['localizer'], UnlessCondition(with_map)),
        ]),
    ])
