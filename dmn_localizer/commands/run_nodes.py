"""``dmn-localizer run {mapping,localize}``: start the nodes as real processes with the same
YAML files and arguments as ``launch/*.launch.py`` (for machines without ``ros2 launch``).

Each node runs as its own process (``python -m dmn_localizer.nodes.<node>``) with
``--ros-args --params-file FILE``; Ctrl-C stops them cleanly (SIGINT, then SIGTERM).
"""
import signal
import time
from pathlib import Path

from dmn_localizer.util.errors import UserError
from dmn_localizer.util.processes import node_command, start_child, stop_children
from dmn_localizer.util.resources import config_path

HELP = 'Start the mapper or localizer node (what the launch files start), no ros2 needed.'

# setup -> [(module, node name, default params file)]
SETUPS = {
    'mapping': [('dmn_localizer.nodes.mapper_node', 'mapper', 'mapper.yaml')],
    'localize': [('dmn_localizer.nodes.localizer_node', 'localizer', 'localizer.yaml')],
}


def add_arguments(parser):
    parser.add_argument('setup', choices=sorted(SETUPS), help='which nodes to start')
    parser.add_argument('--params-file', type=Path,
                        help='YAML parameter file (default: config/<node>.yaml)')
    parser.add_argument('--map-file', help='map file (parameter map_file)')
    parser.add_argument('--model', help='model weights (parameter model)')
    parser.add_argument('--namespace', default='', help='namespace for the nodes and topics')
    parser.add_argument('--use-sim-time', action='store_true', help='use /clock')
    parser.add_argument('--log-level', default='info',
                        choices=['debug', 'info', 'warn', 'error', 'fatal'])
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra parameter override (repeatable)')


def start(args):
    """Start the processes of ``args.setup``; returns the list of Popen objects."""
    procs = []
    for module, node_name, default_params in SETUPS[args.setup]:
        params = args.params_file or config_path(default_params)
        if not Path(params).is_file():
            raise UserError(f'parameter file {params} does not exist')
        procs.append(start_child(node_command(module, node_name, params, args)))
    return procs


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args):
    from dmn_localizer.model.io import model_paths
    if args.model and not model_paths(args.model)[0].is_file():   # NAME or NAME.safetensors
        raise UserError(f'model {args.model} does not exist')
    if args.map_file and not Path(args.map_file).is_file():
        raise UserError(f'map file {args.map_file} does not exist')
    # SIGTERM (a supervisor, `kill`) stops the nodes like Ctrl-C does: no orphans
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    procs = start(args)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop_children(procs)
    return max((p.returncode or 0) for p in procs) if procs else 0
