"""Shared test fixtures: DDS isolation for tests that start ROS processes."""
import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# One torch thread per test process and per command or node a test starts (set it to override):
# PYTEST_WORKERS processes fill the cores, and torch's default of a thread per core in each
# oversubscribes them; OpenMP's waits then slow a command tenfold on a busy machine.
os.environ.setdefault('OMP_NUM_THREADS', '1')

from dmn_localizer.util.processes import localhost_discovery  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
_domain_ids = itertools.count()
DOMAIN_BLOCK = 20
"""Domain IDs one test run cycles through; IDs 1-100 make five blocks (above 101 the DDS ports
can meet Linux's ephemeral range)."""
_block = []   # [first ID of this run's block, its lock file]


def _domain_block():
    """The first domain ID of the block this run holds: an exclusive lock file per block,
    held until the process exits, so two test runs on the machine (a fresh clone's beside a
    checkout's) never share a domain; by pid if all five are taken."""
    if not _block:
        import fcntl
        import tempfile
        for block in range(100 // DOMAIN_BLOCK):
            f = open(os.path.join(tempfile.gettempdir(),
                                  f'dmn_localizer_test_domains_{block}.lock'), 'w')
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            _block.extend([1 + block * DOMAIN_BLOCK, f])
            break
        else:
            _block.extend([1 + (os.getpid() % (100 // DOMAIN_BLOCK)) * DOMAIN_BLOCK, None])
    return _block[0]


# Many tests stop child processes with SIGINT (Ctrl-C, what launch sends). A shell starts a
# background job (`make test &` without job control) with SIGINT ignored, and an ignored
# signal stays ignored across exec, so every child would ignore it and those tests fail
# (12 of them did so here). A handler, unlike SIG_IGN, is reset to the default at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def ros_test_env(domain_id=None):
    """Environment for a ROS child process: localhost-only discovery and a domain ID of this
    run's block (:func:`_domain_block`), the next one for each call, so a test's leftovers do
    not meet the next test and a parallel run on the machine is never met."""
    if domain_id is None:
        domain_id = _domain_block() + next(_domain_ids) % DOMAIN_BLOCK
    env = localhost_discovery(dict(os.environ))
    env.update(ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED='1',
               AMENT_PREFIX_PATH=str(Path(sys.prefix)) + os.pathsep
               + env.get('AMENT_PREFIX_PATH', ''))
    env.pop('ROS_STATIC_PEERS', None)
    return env


@pytest.fixture(autouse=True)
def ros_home(tmp_path_factory, monkeypatch):
    """The localizer keeps its last pose under $ROS_HOME: each test gets its own, so no test
    starts from a pose another one saved (nor from the user's)."""
    path = tmp_path_factory.mktemp('ros_home')
    monkeypatch.setenv('ROS_HOME', str(path))
    return path


@pytest.fixture
def ros_env():
    return ros_test_env()


def start_python(args, env, **kw):
    """Start ``python ARGS`` (this interpreter) as a child process with pipes."""
    return subprocess.Popen([sys.executable, *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def run_python(args, env, timeout):
    """Run ``python ARGS`` to its end (stopped, as by Ctrl-C, if still running after
    ``timeout`` s, or if the test fails while waiting); returns (process, stdout, stderr)."""
    proc = start_python(args, env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = stop_process(proc)
    finally:
        if proc.poll() is None:
            stop_process(proc)
    return proc, out, err


class RosPeer:
    """An rclpy node in the test process (a separate DDS participant from the node under
    test, which runs in its own process)."""

    def __init__(self, env, name='test_peer'):
        import rclpy
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(env['ROS_DOMAIN_ID']))
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate, timeout):
        import time
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def call(self, srv_type, name, timeout=20.0, request=None, resend_every=4.0):
        """``name``'s answer to ``request``, sent again every ``resend_every`` s while
        unanswered: Fast DDS drops a response when the server has not yet matched the client's
        response reader (it waits 100 ms), which happens on a loaded machine right after
        discovery. Only for requests that may be served twice."""
        import time
        client = self.node.create_client(srv_type, name)
        assert self.spin_until(client.service_is_ready, timeout), f'{name} not available'
        request = srv_type.Request() if request is None else request
        deadline = time.monotonic() + timeout
        futures = []
        while time.monotonic() < deadline:
            futures.append(client.call_async(request))
            wait = min(resend_every, deadline - time.monotonic())
            if self.spin_until(lambda: any(f.done() for f in futures), wait):
                return next(f for f in futures if f.done()).result()
        raise AssertionError(f'{name} did not answer')

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


@pytest.fixture
def ros_peer(ros_env):
    peer = RosPeer(ros_env)
    yield peer
    peer.close()


def stop_process(proc, timeout=15):
    """SIGINT (what Ctrl-C and launch send), then kill; returns (stdout, stderr)."""
    import signal
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()
