"""Load a launch file without ROS 2 launch (not installable without a ROS distribution) and
resolve it for given arguments as ``ros2 launch`` would: a stand-in for the part of the
``launch`` / ``launch_ros`` API our launch files use, which records what they build, then
namespaces pushed by groups, conditions, substitutions and parameter values are resolved.

    nodes = resolve_launch_file(path, {'namespace': 'robot1'}, share_dir=REPO)
    nodes[0] -> {'package', 'executable', 'name', 'namespace', 'params_files', 'params',
                 'remappings', 'arguments', 'respawn'}

Unknown API (anything our files do not use) raises, so a launch file that starts using more
of launch is noticed here instead of silently resolved wrong.
"""
import ast
import contextlib
import importlib
import importlib.util
from pathlib import Path
import sys
import types
from unittest import mock


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(_Recorded):
    def resolve(self, ctx):
        name = self.args[0]
        if name not in ctx:
            raise KeyError(f'launch configuration {name!r} not set')
        return ctx[name]

    def perform(self, context):
        return self.resolve(context.launch_configurations)


class PythonExpression(_Recorded):
    def resolve(self, ctx):
        return str(eval(text(self.args[0], ctx), {}, {}))  # launch evaluates it the same way


class IfCondition(_Recorded):
    def holds(self, ctx):
        value = text(self.args[0], ctx).strip().lower()
        if value not in ('true', 'false', '1', '0'):
            raise ValueError(f'condition expects a boolean, got {value!r}')
        return value in ('true', '1')


class UnlessCondition(IfCondition):
    def holds(self, ctx):
        return not super().holds(ctx)


class ParameterValue(_Recorded):
    def resolve(self, ctx):
        value = self.args[0]
        value = value if isinstance(value, bool) else text(value, ctx)
        if self.kwargs.get('value_type') is bool and isinstance(value, str):
            if value.lower() not in ('true', 'false'):
                raise ValueError(f'not a bool: {value!r}')
            return value.lower() == 'true'
        return value


class DeclareLaunchArgument(_Recorded):
    pass


class GroupAction(_Recorded):
    pass


class OpaqueFunction(_Recorded):
    """Calls ``function(context)`` at launch time; the entities it returns are launched."""


class LaunchContext:
    def __init__(self, configurations):
        self.launch_configurations = configurations


class PushRosNamespace(_Recorded):
    pass


class Node(_Recorded):
    pass


class LaunchDescription(_Recorded):
    def get_launch_arguments(self):
        return [e for e in self.args[0] if isinstance(e, DeclareLaunchArgument)]


def text(value, ctx):
    """A substitution (or a list of them, or a plain string) as launch performs it."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ''.join(text(v, ctx) for v in value)
    if hasattr(value, 'resolve'):
        return value.resolve(ctx)
    raise TypeError(f'cannot substitute {value!r}')


def _modules():
    spec = {'launch': {'LaunchDescription': LaunchDescription},
            'launch.actions': {'DeclareLaunchArgument': DeclareLaunchArgument,
                               'GroupAction': GroupAction, 'OpaqueFunction': OpaqueFunction},
            'launch.conditions': {'IfCondition': IfCondition,
                                  'UnlessCondition': UnlessCondition},
            'launch.substitutions': {'LaunchConfiguration': LaunchConfiguration,
                                     'PythonExpression': PythonExpression},
            'launch_ros': {},
            'launch_ros.actions': {'Node': Node, 'PushRosNamespace': PushRosNamespace},
            'launch_ros.parameter_descriptions': {'ParameterValue': ParameterValue}}
    mods = {}
    for name, attrs in spec.items():
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        mods[name] = m
    return mods


def _used_api(path):
    """(module, name) pairs of the launch API that ``path`` and the package's launch helpers
    it imports (dmn_localizer.nodes.launch_parts) use; raises for any the stand-ins lack."""
    tree = ast.parse(path.read_text())
    # the launch file's own modules, imported before the stand-ins are in place: they import
    # launch inside their functions, so at call time
    helpers = sorted({n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                      and n.module and n.module.split('.')[0] == 'dmn_localizer'})
    trees = [tree] + [ast.parse(Path(importlib.import_module(m).__file__).read_text())
                      for m in helpers]
    used = {(n.module, a.name) for t in trees for n in ast.walk(t)
            if isinstance(n, ast.ImportFrom)
            and n.module and n.module.split('.')[0] in ('launch', 'launch_ros')
            for a in n.names}
    return used


@contextlib.contextmanager
def stand_ins(path, share_dir):
    """The stand-in launch API in ``sys.modules`` for launch file ``path`` (while its
    description is built and resolved: an ``OpaqueFunction`` imports launch when it runs);
    ``get_package_share_directory('dmn_localizer')`` answers ``share_dir`` (the repository
    has the installed share layout: config/, launch/)."""
    mods = _modules()
    for module, name in _used_api(path):
        if not hasattr(mods[module], name):  # KeyError for an unknown module
            raise NotImplementedError(f'launch_stub lacks {module}.{name}')
    import ament_index_python.packages as packages

    def share(package):
        assert package == 'dmn_localizer', package
        return str(share_dir)
    with mock.patch.dict(sys.modules, mods), \
            mock.patch.object(packages, 'get_package_share_directory', share):
        yield


def load_description(path, share_dir):
    """``generate_launch_description()`` of ``path`` built with the stand-in API (also where
    the package's launch helpers, :mod:`dmn_localizer.nodes.launch_parts`, use it)."""
    with stand_ins(path, share_dir):
        spec = importlib.util.spec_from_file_location('launch_under_test', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.generate_launch_description()


def _push(namespace, pushed):
    pushed = pushed.strip()
    if not pushed:
        return namespace
    if pushed.startswith('/'):
        return pushed.rstrip('/') or '/'
    return namespace.rstrip('/') + '/' + pushed.strip('/')


def resolve(description, arguments):
    """The nodes ``description`` starts for ``arguments`` (defaults from its declarations)."""
    ctx = {}
    nodes = []

    def visit(entities, namespace):
        for e in entities:
            condition = e.kwargs.get('condition')
            if condition is not None and not condition.holds(ctx):
                continue
            if isinstance(e, DeclareLaunchArgument):
                name = e.args[0]
                ctx[name] = arguments[name] if name in arguments else \
                    text(e.kwargs['default_value'], ctx)
            elif isinstance(e, GroupAction):
                visit(e.args[0], namespace)   # scoped: the push ends with the group
            elif isinstance(e, PushRosNamespace):
                namespace = _push(namespace, text(e.args[0], ctx))
            elif isinstance(e, OpaqueFunction):
                visit(e.kwargs['function'](LaunchContext(dict(ctx))) or [], namespace)
            elif isinstance(e, Node):
                nodes.append(_node(e, namespace, ctx))
            else:
                raise NotImplementedError(type(e).__name__)

    visit(description.args[0], '/')
    unknown = set(arguments) - set(ctx)
    if unknown:
        raise KeyError(f'not declared: {sorted(unknown)}')
    return nodes


def _node(e, namespace, ctx):
    kw = e.kwargs
    files, params = [], {}
    for p in kw.get('parameters', []):
        if isinstance(p, dict):
            for k, v in p.items():
                if isinstance(v, (ParameterValue, bool, float, int)):
                    params[k] = v.resolve(ctx) if isinstance(v, ParameterValue) else v
                elif isinstance(v, list) and all(isinstance(x, str) for x in v):
                    params[k] = list(v)
                else:
                    params[k] = text(v, ctx)
        else:
            files.append(text(p, ctx))
    respawn = kw.get('respawn', False)
    if not isinstance(respawn, bool):
        respawn = text(respawn, ctx).lower() == 'true'
    if 'namespace' in kw:
        namespace = _push(namespace, text(kw['namespace'], ctx))
    return {'package': kw['package'], 'executable': kw['executable'], 'name': kw.get('name'),
            'namespace': namespace, 'params_files': files, 'params': params,
            'remappings': [(text(a, ctx), text(b, ctx)) for a, b in kw.get('remappings', [])],
            'arguments': [text(a, ctx) for a in kw.get('arguments', [])], 'respawn': respawn}


def resolve_launch_file(path, arguments, share_dir):
    with stand_ins(path, share_dir):
        return resolve(load_description(path, share_dir), arguments)


def ros_args(node):
    """The ``--ros-args`` launch_ros gives the node process (parameter dicts as ``-p``)."""
    args = ['--ros-args', '-r', f'__node:={node["name"]}', '-r', f'__ns:={node["namespace"]}']
    for f in node['params_files']:
        args += ['--params-file', f]
    for k, v in node['params'].items():
        args += ['-p', f'{k}:={str(v).lower() if isinstance(v, bool) else v}']
    for a, b in node['remappings']:
        args += ['-r', f'{a}:={b}']
    return args
