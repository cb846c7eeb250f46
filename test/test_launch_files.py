"""Launch files: real launch where launch_ros imports (a ROS install); everywhere, a static
check that they declare the documented arguments and start the right executables, and their
descriptions resolved for given arguments (test/launch_stub.py) down to the nodes' command
lines, which real rclpy nodes then start from."""
import ast
from dataclasses import fields
import importlib.util
from pathlib import Path

import pytest
import yaml

from launch_stub import load_description, resolve_launch_file, ros_args

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch'
ARGS = {'map_file', 'model', 'params_file', 'use_sim_time', 'rviz', 'namespace', 'log_level',
        'autostart', 'use_respawn'}
NAV2_ARGS = {'namespace', 'map_file', 'map', 'model', 'localizer_params_file', 'use_sim_time',
             'autostart', 'use_respawn', 'log_level', 'params_file'}
TF_REMAPS = [('/tf', 'tf'), ('/tf_static', 'tf_static')]


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def _declarations(fname):
    desc = load_description(LAUNCH / fname, REPO)
    return {a.args[0]: a.kwargs for a in desc.get_launch_arguments()}


@pytest.mark.parametrize('fname,executable', [('localize.launch.py', 'localizer_node'),
                                              ('mapping.launch.py', 'mapper_node')])
def test_launch_file_declares_arguments(fname, executable):
    declared = _declarations(fname)
    assert set(declared) == ARGS
    for name, kwargs in declared.items():
        assert kwargs.get('description'), name
    nodes = resolve_launch_file(LAUNCH / fname, {'rviz': 'true'}, REPO)
    assert {n['executable'] for n in nodes} == {executable, 'rviz2'}
    # every node (RViz too) reads the namespaced robot's tf, not the global /tf
    for n in nodes:
        assert set(TF_REMAPS) <= set(n['remappings']), n['executable']


def test_launch_files_share_one_definition():
    """The arguments and nodes the launch files share are defined once, in
    dmn_localizer/nodes/launch_parts.py: the files declare no shared argument and build no
    mapper, localizer or RViz node themselves; the shared arguments are declared alike in all
    three, those that set a node parameter with the parameter's description, and the
    localizer node of localize.launch.py is nav2_localization.launch.py's but for autostart."""
    from dmn_localizer.config import LocalizerConfig, MapperConfig
    for fname in ('localize.launch.py', 'mapping.launch.py', 'nav2_localization.launch.py'):
        tree = ast.parse((LAUNCH / fname).read_text())
        own = {'map'} | ({'params_file'} if fname.startswith('nav2') else set())  # nav2's
        assert {c.args[0].value for c in _calls(tree, 'DeclareLaunchArgument')} <= own
        built = {k.value.value for c in _calls(tree, 'Node') for k in c.keywords
                 if k.arg == 'executable' and isinstance(k.value, ast.Constant)}
        assert not built & {'localizer_node', 'mapper_node', 'rviz2'}, fname
    files = {f: _declarations(f) for f in ('localize.launch.py', 'mapping.launch.py',
                                           'nav2_localization.launch.py')}
    for name in ARGS & NAV2_ARGS - {'autostart', 'params_file'}:   # params_file: per file
        assert len({repr(sorted(d[name].items())) for d in files.values()
                    if name in d}) == (2 if name == 'map_file' else 1), name
    for fname, cls in (('localize.launch.py', LocalizerConfig),
                       ('mapping.launch.py', MapperConfig)):
        params = {f.name: f for f in fields(cls)}
        for name in ('map_file', 'model', 'autostart'):
            assert files[fname][name]['description'] == params[name].metadata['description']
            default = params[name].default
            assert files[fname][name]['default_value'] == \
                (str(default).lower() if isinstance(default, bool) else default)
    local = resolve_launch_file(LAUNCH / 'localize.launch.py', {'map_file': 'm.dmnmap'}, REPO)
    nav2 = resolve_launch_file(LAUNCH / 'nav2_localization.launch.py',
                               {'map_file': 'm.dmnmap'}, REPO)
    (a,) = [n for n in local if n['executable'] == 'localizer_node']
    (b,) = [n for n in nav2 if n['executable'] == 'localizer_node']
    assert (a['params'].pop('autostart'), b['params'].pop('autostart')) == (True, False)
    assert a == b


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


@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None,
                    reason='launch_ros is not installable without a ROS distribution')
def test_nav2_launch_description_builds():
    spec = importlib.util.spec_from_file_location('launch_under_test',
                                                  LAUNCH / 'nav2_localization.launch.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = {a.name for a in module.generate_launch_description().get_launch_arguments()}
    assert names == NAV2_ARGS


@pytest.mark.parametrize('fname,node,key,value', [
    ('localize.launch.py', 'localizer', 'num_particles', 99),
    ('mapping.launch.py', 'mapper', 'keyframe_min_distance', 0.75)])
def test_namespaced_launch_resolves_params_and_remaps(tmp_path, fname, node, key, value):
    """namespace:=robot1: the node, RViz (its tools' topics remapped into the namespace) and
    tf are in /robot1, and a real node started from the resolved command line gets the
    params file's values (its root key matches /robot1/<node>)."""
    data = yaml.safe_load((REPO / 'config' / f'{node}.yaml').read_text())
    (root,) = data
    data[root]['ros__parameters'][key] = value
    params = tmp_path / 'params.yaml'
    params.write_text(yaml.safe_dump(data))
    nodes = resolve_launch_file(LAUNCH / fname, {'namespace': 'robot1', 'rviz': 'true',
                                                 'params_file': str(params),
                                                 'use_respawn': 'true'}, REPO)
    by_exe = {n['executable']: n for n in nodes}
    assert set(by_exe) == {f'{node}_node', 'rviz2'}
    ours, rviz = by_exe[f'{node}_node'], by_exe['rviz2']
    assert (ours['namespace'], ours['name']) == ('/robot1', node)
    assert ours['params_files'] == [str(params)] and ours['respawn'] is True
    assert ours['params']['autostart'] is True and ours['params']['use_sim_time'] is False
    assert ours['remappings'] == TF_REMAPS
    assert rviz['namespace'] == '/robot1'
    assert set(TF_REMAPS + [('/initialpose', 'initialpose'), ('/goal_pose', 'goal_pose')]) \
        <= set(rviz['remappings'])
    assert Path(rviz['arguments'][rviz['arguments'].index('-d') + 1]).is_file()
    assert [n['namespace'] for n in resolve_launch_file(LAUNCH / fname, {}, REPO)] == ['/']

    from inprocess import ros_context
    if node == 'localizer':
        from dmn_localizer.nodes.localizer_node import LocalizerNode as cls
    else:
        from dmn_localizer.nodes.mapper_node import MapperNode as cls
    with ros_context(ros_args(ours)) as context:
        n = cls(context=context)
        try:
            assert n.get_fully_qualified_name() == f'/robot1/{node}'
            assert n.get_parameter(key).value == value
            if node == 'localizer':
                assert n.tf_pub.topic_name == '/robot1/tf'
                # TF in: the same remaps as nav2's (and as TF out)
                assert sorted(s.topic_name for s in n.tf_inputs.subscriptions) == \
                    ['/robot1/tf', '/robot1/tf_static']
        finally:
            n.destroy_node()


def test_nav2_localization_launch():
    """The drop-in for nav2's localization_launch.py: nav2's arguments, the localizer managed
    by lifecycle_manager_localization (autostart there, not in the node; the manager's bond
    with its default timeout: the node keeps its side, test_bond.py), and the
    map_server only when an occupancy grid is given."""
    declared = _declarations('nav2_localization.launch.py')
    assert set(declared) == NAV2_ARGS
    for name, kwargs in declared.items():
        assert kwargs.get('description'), name
    nodes = resolve_launch_file(LAUNCH / 'nav2_localization.launch.py',
                                {'namespace': 'robot1', 'map_file': 'm.dmnmap'}, REPO)
    assert [(n['executable'], n['name'], n['namespace']) for n in nodes] == [
        ('localizer_node', 'localizer', '/robot1'),
        ('lifecycle_manager', 'lifecycle_manager_localization', '/robot1')]
    localizer, manager = nodes
    assert localizer['params']['autostart'] is False
    assert localizer['params']['map_file'] == 'm.dmnmap'
    assert localizer['params_files'] == [str(REPO / 'config' / 'localizer.yaml')]
    assert localizer['remappings'] == TF_REMAPS
    assert manager['params'] == {'use_sim_time': False, 'autostart': True,
                                 'node_names': ['localizer']}
    nodes = resolve_launch_file(LAUNCH / 'nav2_localization.launch.py',
                                {'map': 'grid.yaml', 'autostart': 'false'}, REPO)
    by_name = {n['name']: n for n in nodes}
    assert set(by_name) == {'map_server', 'localizer', 'lifecycle_manager_localization'}
    assert by_name['map_server']['params']['yaml_filename'] == 'grid.yaml'
    manager = by_name['lifecycle_manager_localization']['params']
    assert manager['node_names'] == ['map_server', 'localizer']
    assert manager['autostart'] is False


def test_nav2_params_file_configures_the_map_server(tmp_path):
    """nav2's params file (as bringup passes it): its map_server section, under whatever key
    and namespace, configures the map_server, whose yaml_filename `map` overrides; a file
    without a map_server grid and no `map`: no map_server."""
    nav2 = tmp_path / 'nav2_params.yaml'
    nav2.write_text('amcl:\n  ros__parameters: {max_particles: 2000}\n'
                    'map_server:\n  ros__parameters:\n    yaml_filename: house.yaml\n'
                    '    topic_name: map\n')
    for args, grid in (({}, 'house.yaml'), ({'map': 'grid.yaml'}, 'grid.yaml')):
        nodes = resolve_launch_file(LAUNCH / 'nav2_localization.launch.py',
                                    {'namespace': 'robot1', 'params_file': str(nav2), **args},
                                    REPO)
        by_name = {n['name']: n for n in nodes}
        server = by_name['map_server']['params']
        assert server == {'yaml_filename': grid, 'topic_name': 'map', 'use_sim_time': False}
        assert by_name['map_server']['namespace'] == '/robot1'
        assert 'max_particles' not in by_name['localizer']['params']
    nav2.write_text('amcl:\n  ros__parameters: {max_particles: 2000}\n')
    nodes = resolve_launch_file(LAUNCH / 'nav2_localization.launch.py',
                                {'params_file': str(nav2)}, REPO)
    assert [n['name'] for n in nodes] == ['localizer', 'lifecycle_manager_localization']


@pytest.mark.parametrize('fname,node', [('localize.launch.py', 'localizer'),
                                        ('mapping.launch.py', 'mapper'),
                                        ('nav2_localization.launch.py', 'localizer')])
def test_params_file_map_and_model_hold_unless_given(fname, node):
    """map_file and model set in the params file hold when their launch arguments are left
    empty (as with dmn-localizer run); a launch argument that names one replaces it."""
    nodes = resolve_launch_file(LAUNCH / fname, {}, REPO)
    (ours,) = [n for n in nodes if n['executable'] == f'{node}_node']
    assert not {'map_file', 'model'} & set(ours['params'])
    assert not any(a.startswith(('map_file:=', 'model:=')) for a in ros_args(ours))
    nodes = resolve_launch_file(LAUNCH / fname, {'map_file': 'a.dmnmap', 'model': 'm'}, REPO)
    (ours,) = [n for n in nodes if n['executable'] == f'{node}_node']
    assert (ours['params']['map_file'], ours['params']['model']) == ('a.dmnmap', 'm')


def test_nav2_occupancy_map_path_is_not_evaluated():
    """The occupancy grid's path is used as given, quotes and all (no Python expression is
    built from it)."""
    odd = "/maps/o'brien's lab.yaml"
    nodes = resolve_launch_file(LAUNCH / 'nav2_localization.launch.py', {'map': odd}, REPO)
    by_name = {n['name']: n for n in nodes}
    assert by_name['map_server']['params']['yaml_filename'] == odd


def test_launch_stub_refuses_undeclared_arguments():
    with pytest.raises(KeyError, match='not declared'):
        resolve_launch_file(LAUNCH / 'localize.launch.py', {'namespce': 'robot1'}, REPO)
