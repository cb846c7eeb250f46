"""Every module the package imports is declared: in package.xml for a ROS install and in
requirements/*.txt (or built from interfaces/) for the pip-only setup."""
import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# import name -> (rosdep key in package.xml or None if pip-only, pip requirement name)
PYTHON_LIBS = {
    'numpy': ('python3-numpy', 'numpy'), 'cv2': ('python3-opencv', 'opencv-python-headless'),
    'yaml': ('python3-yaml', 'pyyaml'), 'tqdm': ('python3-tqdm', 'tqdm'),
    'matplotlib': ('python3-matplotlib', 'matplotlib'), 'torch': (None, 'torch'),
    'safetensors': (None, 'safetensors'), 'rosbags': (None, 'rosbags'),
    'vizdoom': (None, 'vizdoom'), 'pybullet': (None, 'pybullet'),
    'pybullet_data': (None, 'pybullet'), 'pytest': ('python3-pytest', 'pytest'),
    'hypothesis': ('python3-hypothesis', 'hypothesis'), 'evo': (None, 'evo'),
}
# ROS packages available in the venv without a wheel of their own name
ROS_BUILT_LOCALLY = {'tf2_msgs', 'nav2_msgs', 'bond'}  # interfaces/
ROS_ONLY_ON_A_ROS_INSTALL = {'launch', 'launch_ros', 'launch_testing', 'launch_testing_ros',
                             'ament_index_python'}


def imports_of(paths):
    found = {}
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split('.')[0]
                if top not in sys.stdlib_module_names and top != 'dmn_localizer':
                    found.setdefault(top, set()).add(path.relative_to(REPO).as_posix())
    return found


def package_xml_deps():
    root = ET.parse(REPO / 'package.xml').getroot()
    deps = {e.tag: set() for e in root}
    for e in root:
        deps[e.tag].add((e.text or '').strip())
    return deps, (REPO / 'package.xml').read_text()


def requirement_names(*files):
    names = set()
    for f in files:
        for line in (REPO / 'requirements' / f).read_text().splitlines():
            m = re.match(r'^([A-Za-z0-9_.-]+)==', line.strip())
            if m:
                names.add(m.group(1).lower())
    return names


def check(imports, xml_tags, req_files):
    deps, xml_text = package_xml_deps()
    declared = set().union(*(deps.get(t, set()) for t in xml_tags))
    reqs = requirement_names(*req_files)
    problems = []
    for mod, where in sorted(imports.items()):
        if mod in PYTHON_LIBS:
            key, pip_name = PYTHON_LIBS[mod]
            if pip_name not in reqs:
                problems.append(f'{mod} (in {sorted(where)[0]}): {pip_name} not pinned in '
                                f'requirements/{"|".join(req_files)}')
            if key is not None and key not in declared:
                problems.append(f'{mod}: rosdep key {key} missing from package.xml')
            if key is None and pip_name not in xml_text:
                problems.append(f'{mod}: pip-only {pip_name} not documented in package.xml')
        elif mod in declared:
            pip_name = 'ros-kilted-' + mod.replace('_', '-')
            if not (pip_name in reqs or mod in ROS_BUILT_LOCALLY
                    or mod in ROS_ONLY_ON_A_ROS_INSTALL):
                problems.append(f'{mod}: {pip_name} not pinned for the pip-only setup')
        else:
            problems.append(f'{mod} (in {sorted(where)[0]}) is declared nowhere')
    return problems


def test_package_imports_are_declared():
    imports = imports_of(sorted((REPO / 'dmn_localizer').rglob('*.py')))
    assert 'rclpy' in imports and 'torch' in imports  # the scan sees real imports
    assert check(imports, ['exec_depend', 'depend'], ['runtime.txt', 'ros.txt']) == []


def test_launch_and_test_imports_are_declared():
    imports = imports_of(sorted((REPO / 'launch').glob('*.py')))
    assert check(imports, ['exec_depend', 'depend'], ['runtime.txt', 'ros.txt']) == []
    imports = imports_of(sorted((REPO / 'test').glob('*.py')))
    for local in (REPO / 'test').glob('*.py'):  # the tests' own helper modules
        imports.pop(local.stem, None)
    assert check(imports, ['exec_depend', 'test_depend', 'depend'],
                 ['runtime.txt', 'ros.txt', 'dev.txt']) == []


def test_core_does_not_import_rclpy():
    """The pure core (everything outside nodes/) must run without ROS."""
    core = [p for p in (REPO / 'dmn_localizer').rglob('*.py') if 'nodes' not in p.parts]
    offenders = {m: w for m, w in imports_of(core).items()
                 if m == 'rclpy' or m.endswith('_msgs') or m.endswith('_srvs')}
    assert offenders == {}


def test_every_requirement_is_pinned():
    for f in (REPO / 'requirements').glob('*.txt'):
        for line in f.read_text().splitlines():
            line = line.split('#')[0].strip()
            assert not line or re.match(r'^[A-Za-z0-9_.-]+==[0-9][^ ]*$', line), \
                f'{f.name}: unpinned requirement {line!r}'


def test_ros_install_requirements_cover_the_pip_only_libraries():
    """On a ROS install rosdep brings what has a key; ros-install.txt and ros-sim.txt must
    bring the rest, with the same torch as the pip-only setup, numpy held below 2 (the
    distribution's messages are compiled against numpy 1.x)."""
    ros = requirement_names('ros-install.txt', 'ros-sim.txt')
    pip_only = {pip for key, pip in PYTHON_LIBS.values() if key is None}
    assert pip_only <= ros, pip_only - ros
    torch = [line for f in ('runtime.txt', 'ros-install.txt')
             for line in (REPO / 'requirements' / f).read_text().splitlines()
             if line.startswith('torch==')]
    assert len(torch) == 2 and torch[0] == torch[1], torch
    constraints = (REPO / 'requirements' / 'constraints-ros.txt').read_text()
    assert re.search(r'^numpy==1\.', constraints, re.M)
