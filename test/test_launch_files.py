"""Launch files: real launch_testing where launch_ros imports (a ROS install); everywhere, a
static check that they declare the documented arguments and start the right executables."""
import ast
import importlib.util
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[1] / 'launch'
ARGS = {'map_file', 'model', 'params_file', 'use_sim_time', 'rviz', 'namespace', 'log_level'}


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


@pytest.mark.parametrize('fname,executable', [('localize.launch.py', 'localizer_node'),
                                              ('mapping.launch.py', 'mapper_node')])
def test_launch_file_declares_arguments(fname, executable):
    tree = ast.parse((LAUNCH / fname).read_text())
    declared = {c.args[0].value for c in _calls(tree, 'DeclareLaunchArgument')}
    assert declared == ARGS
    for c in _calls(tree, 'DeclareLaunchArgument'):
        assert any(k.arg == 'description' for k in c.keywords), c.args[0].value
    executables = {k.value.value for c in _calls(tree, 'Node') for k in c.keywords
                   if k.arg == 'executable'}
    assert executables == {executable, 'rviz2'}
    # every node (RViz too) reads the namespaced robot's tf, not the global /tf
    for c in _calls(tree, 'Node'):
        assert any(k.arg == 'remappings' for k in c.keywords), ast.unparse(c)[:80]


@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None,
                    reason='launch_ros is not installable without a ROS distribution')
@pytest.mark.parametrize('fname', ['localize.launch.py', 'mapping.launch.py'])
def test_launch_description_builds(fname):
    spec = importlib.util.spec_from_file_location('launch_under_test', LAUNCH / fname)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    desc = module.generate_launch_description()
    names = {a.name for a in desc.get_launch_arguments()}
    assert names == ARGS
