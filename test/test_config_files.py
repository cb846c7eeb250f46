"""config/*.yaml give exactly the declared parameters, with the dataclass defaults."""
from dataclasses import fields

import pytest
import yaml

from dmn_localizer.config import LocalizerConfig, MapperConfig, ros_name, SHARED_PARAMETERS
from dmn_localizer.util.resources import config_path


@pytest.mark.parametrize('node,cls', [('mapper', MapperConfig), ('localizer', LocalizerConfig)])
def test_yaml_matches_declared_parameters(node, cls):
    data = yaml.safe_load(config_path(f'{node}.yaml').read_text())
    params = flatten(data[f'/**/{node}']['ros__parameters'])  # any namespace
    assert set(params) == {ros_name(f) for f in fields(cls)}
    for f in fields(cls):
        value = params[ros_name(f)]
        assert value == f.default and type(value) is type(f.default), f.name
        assert f.metadata['description']


def test_yaml_comments_are_the_descriptions():
    """Each parameter's comment line in config/*.yaml is its description (and range)."""
    for node, cls in (('mapper', MapperConfig), ('localizer', LocalizerConfig)):
        text = config_path(f'{node}.yaml').read_text()
        for f in fields(cls):
            rng = f.metadata.get('range')
            comment = f.metadata['description'] + (f' [{rng[0]}, {rng[1]}]' if rng else '')
            assert f'# {comment}\n' in text, (node, f.name)


def test_shared_parameters_have_one_definition():
    """A parameter both nodes declare comes from config.SHARED_PARAMETERS in both: the same
    default, range and type (and description, unless the nodes use it differently)."""
    by_name = {cls: {f.name: f for f in fields(cls)} for cls in (MapperConfig, LocalizerConfig)}
    common = set(by_name[MapperConfig]) & set(by_name[LocalizerConfig])
    assert common == set(SHARED_PARAMETERS)
    for name, spec in SHARED_PARAMETERS.items():
        m, loc = by_name[MapperConfig][name], by_name[LocalizerConfig][name]
        for f in (m, loc):
            assert f.metadata['shared'] == name
            assert f.default == spec['default'] and f.type == m.type
            assert f.metadata.get('range') == (None if spec['lo'] is None
                                               else (spec['lo'], spec['hi']))
        if spec['description'] is not None:
            assert m.metadata['description'] == loc.metadata['description'] \
                == spec['description']


def flatten(params, prefix=''):
    """Nested YAML parameters -> dotted names, as ROS 2 reads them (initial_pose: {x: 0.0}
    is initial_pose.x)."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flatten(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def _rviz_topics(tree):
    """Every topic name in an .rviz tree (displays and tools; ``Topic: {Value: NAME}``)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == 'Topic':
                yield v['Value'] if isinstance(v, dict) else v
            else:
                yield from _rviz_topics(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _rviz_topics(v)


def test_rviz_config_shows_the_node_topics_relative():
    """Relative names: RViz started in the robot's namespace (launch files) shows that robot's
    topics, and its 2D Pose Estimate publishes where that robot's localizer listens."""
    rviz = yaml.safe_load(config_path('dmn_localizer.rviz').read_text())
    topics = list(_rviz_topics(rviz))
    assert {'localizer/particles', 'amcl_pose', 'mapper/contexts',
            'localizer/particle_markers', 'camera/image_raw', 'initialpose'} <= set(topics)
    assert [t for t in topics if t.startswith('/')] == []
    tools = {t['Class']: t for t in rviz['Visualization Manager']['Tools']}
    assert tools['rviz_default_plugins/SetInitialPose']['Topic']['Value'] == \
        LocalizerConfig.initial_pose_topic
    assert rviz['Visualization Manager']['Global Options']['Fixed Frame'] == 'map'


def test_training_configs_resolve_and_bases_merge(tmp_path):
    """Every config/train_*.yaml loads; ``base:`` chains merge (the ``model`` mapping key by
    key) and a cycle is one clear error."""
    from pathlib import Path

    from dmn_localizer.util.errors import FileFormatError
    from dmn_localizer.training import load_train_config
    from dmn_localizer.training.view_pairs import is_view_pair_config, load_view_pair_config
    repo = Path(__file__).resolve().parents[1]
    base = load_train_config(repo / 'config' / 'train_mazes.yaml')
    view_pairs = 0
    for path in sorted((repo / 'config').glob('train_*.yaml')):
        if is_view_pair_config(path):   # the aligned model's recipe
            cfg = load_view_pair_config(path)
            assert cfg.model_config(90.0).architecture == 'aligned'
            view_pairs += 1
        else:
            load_train_config(path)
    assert view_pairs >= 1
    ablation = load_train_config(repo / 'config' / 'train_mazes_no_egocentric.yaml')
    assert ablation.model['egocentric'] is False
    assert ablation.model['attention'] == base.model['attention'] == 'softmax'
    assert ablation.lr == base.lr and ablation.decoy_std == base.decoy_std
    rooms = load_train_config(repo / 'config' / 'train_rooms_from_mazes.yaml')  # 2 levels
    assert rooms.train_data == 'data/rooms/train' and rooms.init_from == 'models/dmn_mazes'
    (tmp_path / 'a.yaml').write_text('base: b.yaml\n')
    (tmp_path / 'b.yaml').write_text('base: a.yaml\n')
    with pytest.raises(FileFormatError, match='cycle'):
        load_train_config(tmp_path / 'a.yaml')
