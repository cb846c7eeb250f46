"""Localize against a saved map: localizer_node (+ optional RViz), namespace-ready.

    ros2 launch dmn_localizer localize.launch.py map_file:=/path/map.dmnmap [model:=...]
        [params_file:=...] [use_sim_time:=true] [rviz:=true] [namespace:=robot1]
        [autostart:=false] [use_respawn:=true] [log_level:=debug]

Under a namespace the node, its relative topics, tf (remapped to <ns>/tf as nav2 does) and
RViz live in it; the parameter file applies there through its wildcard root key
(``/**/localizer:``). With nav2's lifecycle manager use nav2_localization.launch.py. Without
ros2 launch, `dmn-localizer run localize --map-file ...` starts the same node with the same
parameter file.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.parameter_descriptions import ParameterValue

# tf relative so a namespaced robot keeps its own <ns>/tf; RViz's tools publish in the namespace
TF_REMAPS = [('/tf', 'tf'), ('/tf_static', 'tf_static')]
RVIZ_REMAPS = TF_REMAPS + [('/initialpose', 'initialpose'), ('/goal_pose', 'goal_pose'),
                           ('/clicked_point', 'clicked_point')]


def generate_launch_description():
    share = get_package_share_directory('dmn_localizer')
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    log_level = LaunchConfiguration('log_level')
    return LaunchDescription([
        DeclareLaunchArgument('map_file', default_value='',
                              description='Map file written by the mapper (~/save_map)'),
        DeclareLaunchArgument('model', default_value='',
                              description='Model weights (.safetensors); empty = shipped model'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'localizer.yaml'),
                              description='Parameter YAML for the localizer node (root key '
                                          '/**/localizer: so it applies in any namespace)'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use simulation (/clock) time'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='Start RViz (config/dmn_localizer.rviz) in the '
                                          'namespace'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace for the nodes, their topics and tf'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='Node parameter autostart: a lifecycle node '
                                          'configures and activates itself (false: a '
                                          'lifecycle manager drives it)'),
        DeclareLaunchArgument('use_respawn', default_value='false',
                              description='Restart the node if it crashes'),
        DeclareLaunchArgument('log_level', default_value='info', description='Log level'),
        GroupAction([
            PushRosNamespace(LaunchConfiguration('namespace')),
            Node(package='dmn_localizer', executable='localizer_node', name='localizer',
                 output='screen', respawn=LaunchConfiguration('use_respawn'),
                 respawn_delay=2.0,
                 parameters=[LaunchConfiguration('params_file'),
                             {'use_sim_time': use_sim_time,
                              'autostart': ParameterValue(LaunchConfiguration('autostart'),
                                                          value_type=bool),
                              'map_file': LaunchConfiguration('map_file'),
                              'model': LaunchConfiguration('model')}],
                 arguments=['--ros-args', '--log-level', log_level],
                 remappings=TF_REMAPS),
            Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                 condition=IfCondition(LaunchConfiguration('rviz')),
                 arguments=['-d', os.path.join(share, 'config', 'dmn_localizer.rviz')],
                 parameters=[{'use_sim_time': use_sim_time}],
                 remappings=RVIZ_REMAPS),
        ]),
    ])
