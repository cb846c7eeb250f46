"""Build a map: mapper_node (+ optional RViz), namespace-ready.

    ros2 launch dmn_localizer mapping.launch.py [map_file:=start_from.dmnmap] [model:=...]
        [params_file:=...] [use_sim_time:=true] [rviz:=true] [namespace:=robot1]
        [autostart:=false] [use_respawn:=true] [log_level:=debug]

Save with `ros2 service call [/<ns>]/mapper/save_map std_srvs/srv/Trigger`. The parameter file
applies in any namespace through its wildcard root key (``/**/mapper:``). Without ros2 launch,
`dmn-localizer run mapping` starts the same node with the same parameter file. The arguments
and nodes are those of localize.launch.py (:mod:`dmn_localizer.nodes.launch_parts`).
"""
from dmn_localizer.nodes.launch_parts import node_with_rviz


def generate_launch_description():
    return node_with_rviz('mapper')
