"""Under a namespace the nodes still get config/*.yaml (wildcard root key ``/**/<node>``),
started as ``dmn-localizer run`` starts them: real rclpy nodes, in this process."""
import argparse

import pytest
import yaml

from dmn_localizer.commands import run_nodes
from dmn_localizer.util.processes import node_command
from dmn_localizer.util.resources import config_path
from inprocess import ros_context


def _node_cmd(setup, params_file, namespace):
    parser = argparse.ArgumentParser()
    run_nodes.add_arguments(parser)
    args = parser.parse_args([setup, '--namespace', namespace, '--params-file', str(params_file)])
    module, name, _ = run_nodes.SETUPS[setup][0]
    return node_command(module, name, params_file, args)


@pytest.mark.parametrize('setup,node,key,value', [
    ('localize', 'localizer', 'num_particles', 99),
    ('mapping', 'mapper', 'keyframe_min_distance', 0.75)])
def test_params_file_applies_under_a_namespace(tmp_path, setup, node, key, value):
    data = yaml.safe_load(config_path(f'{node}.yaml').read_text())
    (root,) = data  # the shipped file's own root key, whatever it is
    assert data[root]['ros__parameters'][key] != value
    data[root]['ros__parameters'][key] = value
    params = tmp_path / f'{node}.yaml'
    params.write_text(yaml.safe_dump(data))
    cmd = _node_cmd(setup, params, 'robot1')
    ros_args = cmd[cmd.index('--ros-args'):]
    assert ['-r', '__ns:=/robot1'] == ros_args[-2:]

    if node == 'localizer':
        from dmn_localizer.nodes.localizer_node import LocalizerNode as cls
    else:
        from dmn_localizer.nodes.mapper_node import MapperNode as cls
    with ros_context(ros_args) as context:
        n = cls(context=context)
        try:
            assert n.get_fully_qualified_name() == f'/robot1/{node}'
            assert n.get_parameter(key).value == value
            assert getattr(n.config, key) == value
            if node == 'localizer':   # TF in and out under the namespace, as nav2's
                assert n.tf_pub.topic_name == '/robot1/tf'
                assert sorted(s.topic_name for s in n.tf_inputs.subscriptions) == \
                    ['/robot1/tf', '/robot1/tf_static']
        finally:
            n.destroy_node()
