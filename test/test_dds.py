"""Two separate processes exchange real messages over DDS on localhost."""
import json

import pytest

from conftest import start_python


@pytest.mark.parametrize('kind', ['image', 'pose', 'tf'])
def test_message_crosses_process_boundary(kind, ros_env):
    sub = start_python(['test/ros_peer.py', 'sub', kind, '30'], ros_env)
    pub = start_python(['test/ros_peer.py', 'pub', kind, '30'], ros_env)
    try:
        out, err = sub.communicate(timeout=45)
    finally:
        pub.kill()
        pub.communicate()
    assert sub.returncode == 0, f'no {kind} message received: {err[-2000:]}'
    got = json.loads(out.strip().splitlines()[-1])
    if kind == 'image':
        assert got == {'encoding': 'rgb8', 'size': [2, 3], 'data': list(range(18)),
                       'frame': 'camera_link'}
    elif kind == 'pose':
        assert got == {'frame': 'map', 'xy': [1.5, -2.25], 'qzw': [0.6, 0.8],
                       'cov': [0.25, 0.25, 0.01]}
    else:
        assert got == {'transforms': [['map', 'odom', 3.0]]}


def test_domains_are_isolated():
    """A subscriber on another domain ID hears nothing (it times out, status 3, not a crash),
    while one on the publisher's domain hears it: the isolation the tests rely on."""
    from conftest import ros_test_env
    pub_env, other = ros_test_env(), ros_test_env()     # two IDs of this run's block
    pub = start_python(['test/ros_peer.py', 'pub', 'pose', '20'], pub_env)
    same = start_python(['test/ros_peer.py', 'sub', 'pose', '15'], pub_env)
    sub = start_python(['test/ros_peer.py', 'sub', 'pose', '4'], other)
    try:
        out, err = sub.communicate(timeout=30)
        same_out, same_err = same.communicate(timeout=30)
    finally:
        pub.kill()
        pub.communicate()
    assert sub.returncode == 3 and 'timeout' in out, err[-2000:]
    assert same.returncode == 0, same_err[-2000:]
