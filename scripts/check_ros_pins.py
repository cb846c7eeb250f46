"""Do the pins for a ROS 2 install resolve on the distributions' Pythons? (`make pins`, CI)

    python scripts/check_ros_pins.py [--python 3.10] [--python 3.12] [--sim]  (default: 3.10)

For each Python version: `pip install --dry-run` of requirements/ros-install.txt (and with
--sim ros-sim.txt, whose pybullet has wheels up to Python 3.11 only) with
requirements/constraints-ros.txt, binary wheels only, for Linux x86_64 and that Python (no
interpreter of that version needed). torch is checked by its index listing instead (pip would
fetch its 0.5 GB wheel). Fails (exit 1) when a pin does not resolve, or when the resolution
installs a package the constraints do not pin (so a new dependency cannot drift in unnoticed).
Needs PyPI.
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REQ = Path(__file__).resolve().parents[1] / 'requirements'
PLATFORMS = ['manylinux_2_28_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64',
             'manylinux_2_5_x86_64', 'manylinux1_x86_64', 'linux_x86_64']
PIN = re.compile(r'^([A-Za-z0-9_.-]+)==(\S+)$')


def pins(path):
    out = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line.split('#')[0].strip())
        if m:
            out[canonical(m.group(1))] = m.group(2)
    return out


def canonical(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def pip(args):
    cmd = [sys.executable, '-m', 'pip', '--disable-pip-version-check', *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def check(python_version, tmp, sim):
    target = ['--python-version', python_version, '--only-binary=:all:',
              *[a for p in PLATFORMS for a in ('--platform', p)]]
    top = pins(REQ / 'ros-install.txt')
    if sim:
        top.update(pins(REQ / 'ros-sim.txt'))
    constraints = pins(REQ / 'constraints-ros.txt')
    problems = []
    torch = top.pop('torch')
    r = pip(['index', 'versions', 'torch', *target])
    if r.returncode or not re.search(rf'\b{re.escape(torch)}\b', r.stdout.split('\n', 1)[-1]):
        problems.append(f'torch=={torch}: no wheel for Python {python_version}: '
                        f'{(r.stdout + r.stderr).strip()[-500:]}')
    req = Path(tmp) / 'req.txt'
    req.write_text(''.join(f'{n}=={v}\n' for n, v in top.items()))
    report = Path(tmp) / f'report-{python_version}.json'
    r = pip(['install', '--dry-run', '--ignore-installed', '--quiet', *target,
             '--target', str(Path(tmp) / 'target'), '--report', str(report),
             '-r', str(req), '-c', str(REQ / 'constraints-ros.txt')])
    if r.returncode:
        errors = [ln for ln in (r.stdout + r.stderr).splitlines()
                  if 'is ignored: it is neither' not in ln]
        problems.append(f'pins do not resolve for Python {python_version}:\n  '
                        + '\n  '.join(errors[-25:]))
        return problems
    installed = {canonical(i['metadata']['name']): i['metadata']['version']
                 for i in json.loads(report.read_text())['install']}
    for name, version in sorted(installed.items()):
        if name not in top and constraints.get(name) != version:
            problems.append(f'{name}=={version} (Python {python_version}) is not pinned in '
                            f'constraints-ros.txt')
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--python', action='append', help='Python version (repeatable)')
    parser.add_argument('--sim', action='store_true', help='ros-sim.txt too')
    args = parser.parse_args(argv)
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for version in args.python or ['3.10']:
            t0 = time.monotonic()
            found = check(version, tmp, args.sim)
            problems += found
            print(f'[pins] Python {version}: {"FAILED" if found else "ok"} '
                  f'({time.monotonic() - t0:.0f} s)', flush=True)
    for p in problems:
        print(f'[pins] {p}', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
