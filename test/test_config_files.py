"""config/*.yaml give exactly the declared parameters, with the dataclass defaults."""
from dataclasses import fields

import pytest
import yaml

from dmn_localizer.config import LocalizerConfig, MapperConfig
from dmn_localizer.resources import config_path


@pytest.mark.parametrize('node,cls', [('mapper', MapperConfig), ('localizer', LocalizerConfig)])
def test_yaml_matches_declared_parameters(node, cls):
    data = yaml.safe_load(config_path(f'{node}.yaml').read_text())
    params = data[node]['ros__parameters']
    assert set(params) == {f.name for f in fields(cls)}
    for f in fields(cls):
        assert params[f.name] == f.default and type(params[f.name]) is type(f.default), f.name
        assert f.metadata['description']


def test_rviz_config_shows_the_node_topics():
    rviz = yaml.safe_load(config_path('dmn_localizer.rviz').read_text())
    displays = rviz['Visualization Manager']['Displays']
    topics = {d['Topic']['Value'] for d in displays if 'Topic' in d}
    assert {'/localizer/particles', '/localizer/pose', '/mapper/contexts',
            '/localizer/particle_markers', '/camera/image_raw'} <= topics
    assert rviz['Visualization Manager']['Global Options']['Fixed Frame'] == 'map'
