"""The environment that keeps the nodes' DDS discovery on this machine, per ROS distribution.
Only Kilted runs here: Humble's rclpy is stood in for by a package folder without
``event_handler.py`` (the module that came with Iron)."""
import importlib.machinery
import importlib.util

from dmn_localizer.util.processes import localhost_discovery


def test_installed_distribution_uses_the_discovery_range_and_drops_the_deprecated_variable():
    env = localhost_discovery({'ROS_LOCALHOST_ONLY': '1', 'OTHER': 'x'})
    assert env == {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST', 'OTHER': 'x'}


def test_humble_uses_localhost_only(tmp_path, monkeypatch):
    (tmp_path / 'rclpy').mkdir()
    (tmp_path / 'rclpy' / '__init__.py').write_text('')
    (tmp_path / 'rclpy' / 'node.py').write_text('')
    spec = importlib.machinery.ModuleSpec('rclpy', None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / 'rclpy')]
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: spec if name == 'rclpy' else None)
    assert localhost_discovery({})['ROS_LOCALHOST_ONLY'] == '1'
    (tmp_path / 'rclpy' / 'event_handler.py').write_text('')   # Iron and later
    assert localhost_discovery({}) == {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}
