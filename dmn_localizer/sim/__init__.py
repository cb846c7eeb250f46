"""Simulated worlds: random mazes (ViZDoom) and rooms (pybullet TinyRenderer).

Every world is a ``40 m x 40 m`` area (see :mod:`dmn_localizer.geometry`) with an exact-pose
renderer; :func:`dmn_localizer.sim.world.make_world` is the entry point. Nothing here imports
rclpy.
"""
