"""Shared test fixtures: DDS isolation for tests that start ROS processes."""
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_domain_ids = itertools.count()


def ros_test_env(domain_id=None):
    """Environment for a ROS child process: localhost-only discovery and a domain ID that no
    other test (in this run or a parallel run on the machine) uses."""
    if domain_id is None:
        domain_id = 1 + (os.getpid() * 7 + next(_domain_ids)) % 100  # 1..100, per test
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_DOMAIN_ID=str(domain_id),
               ROS_LOCALHOST_ONLY='1', PYTHONUNBUFFERED='1',
               AMENT_PREFIX_PATH=str(Path(sys.prefix)) + os.pathsep
               + env.get('AMENT_PREFIX_PATH', ''))
    env.pop('ROS_STATIC_PEERS', None)
    return env


@pytest.fixture
def ros_env():
    return ros_test_env()


def start_python(args, env, **kw):
    """Start ``python ARGS`` (this interpreter) as a child process with pipes."""
    return subprocess.Popen([sys.executable, *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)
