"""Where the package's installed data lives: config/, launch/, models/.

Under colcon (or a pip install of the package with its data files) they are in
``<prefix>/share/dmn_localizer``; in a source checkout (editable install) they are beside the
Python package. Looked up without ament_index_python so the core needs no ROS.
"""
import os
from pathlib import Path

PACKAGE = 'dmn_localizer'
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def share_dir():
    """The directory holding config/, launch/ and models/."""
    if (_SOURCE_ROOT / 'package.xml').is_file() and (_SOURCE_ROOT / 'config').is_dir():
        return _SOURCE_ROOT  # source checkout: always use its own files
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        candidate = Path(prefix) / 'share' / PACKAGE
        if prefix and (candidate / 'package.xml').is_file():
            return candidate
    return _SOURCE_ROOT


def config_path(name):
    return share_dir() / 'config' / name


def model_path(name):
    return share_dir() / 'models' / name


DEFAULT_MODEL = 'aligned_mazes_e2e.safetensors'
DMN_MODEL = 'dmn_mazes.safetensors'


def default_model_path():
    """The default model of the nodes, ``replay``, ``demo`` and ``finetune``: the shipped
    aligned mazes model fine-tuned end to end (models/aligned_mazes_e2e.safetensors + its
    .json card)."""
    return model_path(DEFAULT_MODEL)


def dmn_model_path():
    """The shipped DMN (the paper's model) trained on the mazes: ``bench``'s default."""
    return model_path(DMN_MODEL)
