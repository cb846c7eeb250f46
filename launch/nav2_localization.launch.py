"""Drop-in for nav2_bringup's localization_launch.py: dmn_localizer instead of amcl, managed by
nav2's ``lifecycle_manager_localization``.

    ros2 launch dmn_localizer nav2_localization.launch.py map_file:=/path/map.dmnmap \\
        [map:=/path/occupancy.yaml] [namespace:=robot1] [use_sim_time:=true] [autostart:=true]

Include it where nav2's bringup_launch.py includes localization_launch.py; the arguments that
file passes (namespace, map, use_sim_time, autostart, use_respawn, log_level, params_file)
mean the same here, except that of ``params_file`` (nav2's YAML) only the map_server's section
is used: the localizer takes ``localizer_params_file``. ``use_composition`` and
``container_name`` do not apply (Python nodes are not components). The lifecycle manager
drives the nodes (the localizer gets ``autostart: false``) and keeps a bond with each, as with
amcl (the localizer's heartbeat: ``bond_heartbeat_period``). The map_server (nav2_map_server)
starts and is managed only when ``map`` or the params file's map_server ``yaml_filename``
names an occupancy grid, which costmaps and planners need; the localizer itself uses only its
``.dmnmap``. The arguments and the localizer node they share with localize.launch.py are
defined once (:mod:`dmn_localizer.nodes.launch_parts`).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dmn_localizer.config import node_parameters
from dmn_localizer.nodes.launch_parts import (declare, declare_parameter, declare_params_file,
                                              dmn_node, in_namespace, launch_bool,
                                              log_arguments, respawn_options, TF_REMAPS)


def generate_launch_description():
    use_sim_time = launch_bool('use_sim_time')

    def lifecycle_manager(node_names):
        return Node(package='nav2_lifecycle_manager', executable='lifecycle_manager',
                    name='lifecycle_manager_localization', output='screen',
                    arguments=log_arguments(),
                    parameters=[{'use_sim_time': use_sim_time,
                                 'autostart': launch_bool('autostart'),
                                 'node_names': node_names}])

    def map_server_and_manager(context):
        occupancy_map = LaunchConfiguration('map').perform(context)
        nav2_params = LaunchConfiguration('params_file').perform(context)
        # the map_server's section of nav2's params file, under any namespace (nav2 rewrites
        # the file for its namespace; the section's values are passed here instead)
        params = node_parameters(nav2_params, 'map_server', required=False) \
            if nav2_params else {}
        if occupancy_map:
            params['yaml_filename'] = occupancy_map
        if not params.get('yaml_filename'):
            return [lifecycle_manager(['localizer'])]
        params['use_sim_time'] = use_sim_time
        return [Node(package='nav2_map_server', executable='map_server', name='map_server',
                     output='screen', arguments=log_arguments(), parameters=[params],
                     remappings=TF_REMAPS, **respawn_options()),
                lifecycle_manager(['map_server', 'localizer'])]

    return LaunchDescription([
        declare('namespace'),
        declare_parameter('localizer', 'map_file'),
        DeclareLaunchArgument('map', default_value='',
                              description='Occupancy grid YAML for nav2_map_server (empty: the '
                                          "params_file's map_server yaml_filename, else no "
                                          'map_server)'),
        DeclareLaunchArgument('params_file', default_value='',
                              description="nav2's params file: its map_server section configures "
                                          'the map_server (the localizer reads '
                                          'localizer_params_file)'),
        declare_parameter('localizer', 'model'),
        declare_params_file('localizer', 'localizer_params_file'),
        declare('use_sim_time'),
        declare_parameter('localizer', 'autostart', 'The lifecycle manager configures and '
                          'activates the nodes at start'),
        declare('use_respawn'),
        declare('log_level'),
        in_namespace(
            # the lifecycle manager drives the localizer: no autostart in the node
            dmn_node('localizer', 'localizer_params_file', autostart=False),
            OpaqueFunction(function=map_server_and_manager)),
    ])
