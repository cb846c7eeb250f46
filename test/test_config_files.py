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
