"""Build a map: mapper_node (+ optional RViz).

    ros2 launch dmn_localizer mapping.launch.py [map_file:=start_from.dmnmap] [model:=...]
        [params_file:=...] [use_sim_time:=true] [rviz:=true] [namespace:=robot1]

Save with `ros2 service call /mapper/save_map std_srvs/srv/Trigger`. Without ros2 launch,
`dmn-localizer run mapping` starts the same node with the same parameter file.
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
    use_sim_time = LaunchConfiguration('use_sim_time')
    # tf is remapped relative so a namespaced robot keeps its own /<ns>/tf (as nav2 does)
    remappings = [('/tf', 'tf'), ('/tf_static', 'tf_static')]
    return LaunchDescription([
        DeclareLaunchArgument('map_file', default_value='',
                              description='Existing map to extend (empty = new map)'),
        DeclareLaunchArgument('model', default_value='',
                              description='Model weights (.safetensors); empty = shipped model'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'mapper.yaml'),
                              description='Parameter YAML for the mapper node'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use simulation (/clock) time'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='Start RViz with config/dmn_localizer.rviz'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace for the node and its topics'),
        DeclareLaunchArgument('log_level', default_value='info', description='Log level'),
        GroupAction([
            PushRosNamespace(LaunchConfiguration('namespace')),
            Node(package='dmn_localizer', executable='mapper_node', name='mapper',
                 output='screen',
                 parameters=[LaunchConfiguration('params_file'),
                             {'use_sim_time': ParameterValue(use_sim_time, value_type=bool),
                              'map_file': LaunchConfiguration('map_file'),
                              'model': LaunchConfiguration('model')}],
                 arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
                 remappings=remappings),
            Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                 condition=IfCondition(LaunchConfiguration('rviz')),
                 arguments=['-d', os.path.join(share, 'config', 'dmn_localizer.rviz')],
                 parameters=[{'use_sim_time': ParameterValue(use_sim_time, value_type=bool)}],
                 remappings=remappings),
        ]),
    ])
