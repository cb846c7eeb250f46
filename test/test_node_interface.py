"""The nodes' nav2 AMCL-compatible interface (issue 21): AMCL's parameter names, parameters
that apply at run time, frame checks, services. In-process tests build the node object in the
test process and call its callbacks; the DDS tests drive a node process from another one."""
import pytest

from inprocess import make_node, ros_context, write_tiny_model_and_map
from dmn_localizer.nodes.localizer_node import LocalizerNode


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    return write_tiny_model_and_map(tmp_path_factory.mktemp('interface'),
                                    [[3.0 * i, 2.0 * (i % 2), 0.5] for i in range(6)])


@pytest.fixture(scope='module')
def context():
    with ros_context() as ctx:
        yield ctx


def localizer(context, files, **params):
    p = dict(num_particles=16, global_num_particles=32, health_samples=8,
             model=str(files / 'tiny.safetensors'), map_file=str(files / 'map.dmnmap'))
    p.update(params)
    return make_node(LocalizerNode, context, **p)


def test_amcl_parameter_names_and_deprecated_aliases(context, files, capfd):
    node = localizer(context, files, map_frame='world', base_frame_id='base')
    try:
        for name in ('global_frame_id', 'odom_frame_id', 'base_frame_id', 'transform_tolerance',
                     'update_min_d', 'update_min_a', 'tf_broadcast'):
            assert node.has_parameter(name), name
        assert not node.has_parameter('map_frame')
        assert node.config.global_frame_id == 'world'  # the old name still works
        assert node.config.base_frame_id == 'base'
        assert node.get_parameter('transform_tolerance').value == 1.0  # AMCL's default
    finally:
        node.destroy_node()
    err = capfd.readouterr().err
    assert err.count('parameter map_frame is deprecated: use global_frame_id') == 1, err
