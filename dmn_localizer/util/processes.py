"""Child processes that never outlive us: started with a parent-death signal, stopped the way
a ROS node expects (SIGINT for a clean shutdown, then SIGTERM, then SIGKILL); the command line
of a node process (``dmn-localizer run`` and live replay start nodes with it); the environment
that keeps a node's DDS discovery on this machine."""
import ctypes
import importlib.util
import os
import signal
import subprocess
import sys
import time

from dmn_localizer.util.errors import UserError

PR_SET_PDEATHSIG = 1


def localhost_discovery(env):
    """``env`` (a dict, changed and returned) with DDS discovery kept on this machine, in the
    installed ROS distribution's terms: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` from Iron on
    (where ``ROS_LOCALHOST_ONLY`` is deprecated: every init warns about it, so it is removed),
    ``ROS_LOCALHOST_ONLY=1`` on Humble (rclpy without ``event_handler``, which came with
    Iron)."""
    spec = importlib.util.find_spec('rclpy')   # finds the package without importing it
    locations = spec.submodule_search_locations if spec else None
    humble = bool(locations) and not any(
        os.path.exists(os.path.join(d, 'event_handler.py')) for d in locations)
    if humble:
        env['ROS_LOCALHOST_ONLY'] = '1'
    else:
        env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
        env.pop('ROS_LOCALHOST_ONLY', None)
    return env


def _die_with_parent():
    """Runs in the child between fork and exec: SIGINT when the parent dies (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)
    except (OSError, AttributeError):
        pass


def start_child(cmd, **popen_kwargs):
    """``subprocess.Popen(cmd, ...)`` whose process gets SIGINT if this process dies, even by
    SIGKILL, so no node is left running. ``start_new_session=True`` in ``popen_kwargs`` keeps
    a terminal's Ctrl-C away from it (the caller then stops it)."""
    if sys.platform.startswith('linux'):
        popen_kwargs.setdefault('preexec_fn', _die_with_parent)
    return subprocess.Popen(cmd, **popen_kwargs)


def stop_children(procs, timeout=10.0):
    """SIGINT every running process, wait up to ``timeout`` in all, then SIGTERM and SIGKILL
    whatever is left (5 s each)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for p in procs:
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and p.poll() is None:
                p.send_signal(sig)
            try:
                p.wait(max(0.1, deadline - time.monotonic()) if sig is None else 5.0)
                break
            except subprocess.TimeoutExpired:
                continue


def node_command(module, node_name, params_file, args):
    """The command line of one node process, as ``ros2 launch`` would start it."""
    cmd = [sys.executable, '-m', module, '--ros-args', '-r', f'__node:={node_name}',
           '--params-file', str(params_file), '--log-level', args.log_level,
           '-p', f'use_sim_time:={"true" if args.use_sim_time else "false"}']
    # as the launch files: a namespaced robot has its own <ns>/tf (params files use the
    # wildcard key /**/<node>, so they apply under any namespace)
    cmd += ['-r', '/tf:=tf', '-r', '/tf_static:=tf_static']
    if args.namespace:
        cmd += ['-r', f'__ns:=/{args.namespace.strip("/")}']
    if args.map_file:
        cmd += ['-p', f'map_file:={args.map_file}']
    if args.model:
        cmd += ['-p', f'model:={args.model}']
    for p in args.param:
        if ':=' not in p:
            raise UserError(f'--param expects NAME:=VALUE, got {p!r}')
        cmd += ['-p', p]
    return cmd
