"""Localize against a saved map: localizer_node (+ optional RViz), namespace-ready.

    ros2 launch dmn_localizer localize.launch.py map_file:=/path/map.dmnmap [model:=...]
        [params_file:=...] [use_sim_time:=true] [rviz:=true] [namespace:=robot1]
        [autostart:=false] [use_respawn:=true] [log_level:=debug]

Under a namespace the node, its relative topics, tf (remapped to <ns>/tf as nav2 does) and
RViz live in it; the parameter file applies there through its wildcard root key
(``/**/localizer:``). With nav2's lifecycle manager use nav2_localization.launch.py. Without
ros2 launch, `dmn-localizer run localize --map-file ...` starts the same node with the same
parameter file. The arguments and nodes are those of mapping.launch.py
(:mod:`dmn_localizer.nodes.launch_parts`).
"""
from dmn_localizer.nodes.launch_parts import node_with_rviz


def generate_launch_description():
    return node_with_rviz('localizer')
