"""Localize against a saved map: localizer_node (+ optional RViz).

    ros2 launch dmn_localizer localize.launch.py map_file:=/path/map.dmnmap [model:=...]
        [params_file:=...] [use_sim_time:=true] [rviz:=true] [namespace:=robot1]

Without ros2 launch, `dmn-localizer run localize --map-file ...` starts the same node with the
same parameter file.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    share = get_package_share_directory('dmn_localizer')
    map_file = LaunchConfiguration('map_file')
    model = LaunchConfiguration('model')
    params_file = LaunchConfiguration('params_file')
    use_sim_time = LaunchConfiguration('use_sim_time')
    namespace = LaunchConfiguration('namespace')
    log_level = LaunchConfiguration('log_level')
    # tf is remapped relative so a namespaced robot keeps its own /<ns>/tf (as nav2 does)
    remappings = [('/tf', 'tf'), ('/tf_static', 'tf_static')]
    return LaunchDescription([
        DeclareLaunchArgument('map_file', default_value='',
                              description='Map file written by the mapper (~/save_map)'),
        DeclareLaunchArgument('model', default_value='',
                              description='Model weights (.safetensors); empty = shipped model'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'localizer.yaml'),
                              description='Parameter YAML for the localizer node'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use simulation (/clock) time'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='Start RViz with config/dmn_localizer.rviz'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace for the node and its topics'),
        DeclareLaunchArgument('log_level', default_value='info', description='Log level'),
        GroupAction([
            PushRosNamespace(namespace),
            Node(package='dmn_localizer', executable='localizer_node', name='localizer',
                 output='screen', respawn=False,
                 parameters=[params_file,
                             {'use_sim_time': ParameterValue(use_sim_time, value_type=bool),
                              'map_file': map_file, 'model': model}],
                 arguments=['--ros-args', '--log-level', log_level],
                 remappings=remappings),
            Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                 condition=IfCondition(LaunchConfiguration('rviz')),
                 arguments=['-d', os.path.join(share, 'config', 'dmn_localizer.rviz')],
                 parameters=[{'use_sim_time': ParameterValue(use_sim_time, value_type=bool)}],
                 remappings=remappings),
        ]),
    ])
