"""Imports run one way (docs/architecture.md): CLI -> nodes -> tools -> training and
evaluation -> core -> util; a module imports its own layer or lower ones, never a higher."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'dmn_localizer'
LAYERS = {  # first part of the module name under dmn_localizer -> layer, low to high
    'util': 0,
    'config': 1, 'geometry': 1, 'images': 1, 'depth': 1, 'model': 1, 'filter': 1,
    'localization': 1, 'mapping': 1, 'data': 1, 'sim': 1, 'bags': 1,
    'training': 2, 'evaluation': 2,
    'replay': 3, 'bench': 3,
    'nodes': 4,
    'commands': 5, 'cli': 5, '__main__': 5,
}


def _layer(module):
    """Layer of a dotted module name under dmn_localizer (the package itself: lowest)."""
    parts = module.split('.')[1:]
    assert not parts or parts[0] in LAYERS, f'{module}: place it in a layer in LAYERS'
    return LAYERS[parts[0]] if parts else 0


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split('.')[0] == 'dmn_localizer':
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split('.')[0] == 'dmn_localizer')


def test_no_import_runs_upward():
    upward = []
    for path in sorted(PACKAGE.rglob('*.py')):
        rel = path.relative_to(PACKAGE.parent).with_suffix('')
        module = '.'.join(p for p in rel.parts if p != '__init__')
        for target in _imports(path):
            if _layer(target) > _layer(module):
                upward.append(f'{module} -> {target}')
    assert upward == []
