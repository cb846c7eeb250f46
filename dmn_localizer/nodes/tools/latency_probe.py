"""Image-in to pose-out latency of a running localizer node (for ``dmn-localizer bench``).

Starts the real localizer node as a process (``dmn-localizer run localize``) on a map of
rendered maze views, publishes odometry and camera images at a fixed rate from this process,
and times each image's publication to the arrival of the ``amcl_pose`` with the same stamp
(both on this machine's clock). Closed loop: the next image goes out only after the previous
pose arrived, so the figures are the node's latency, not a queue's. DDS traffic stays on
localhost in a private domain.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dmn_localizer.util.processes import localhost_discovery, start_child, stop_children


def _env(domain_id):
    env = localhost_discovery(dict(os.environ))
    env['ROS_DOMAIN_ID'] = str(domain_id)
    return env


def _make_map(path, image_size, contexts, seed=1_100_000):
    from dmn_localizer.mapping.view_map import ViewMap
    from dmn_localizer.sim.world import make_world
    with make_world('mazes', seed, image_size=image_size) as world:
        poses = world.sample_free_poses(np.random.default_rng(0), contexts)
        vm = ViewMap()
        for img, p in zip(world.render(poses), poses):
            vm.add(img, p)
        vm.save(path)
        return world.render(world.sample_free_poses(np.random.default_rng(1), 8))


def measure(model_path, particles, frames=40, warmup=5, rate_hz=4.0, contexts=16,
            image_size=32, domain_id=None, precision='fp32', params=()):
    """Latency statistics (ms) of ``frames`` image updates at ``particles`` particles;
    ``params``: more node parameters ('name:=value')."""
    import rclpy
    from nav_msgs.msg import Odometry
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from dmn_localizer.nodes.common import LATCHED
    from dmn_localizer.nodes.conversions import xyyaw_to_pose

    domain_id = domain_id if domain_id is not None else 150 + os.getpid() % 70
    with tempfile.TemporaryDirectory() as tmp:
        map_file = Path(tmp) / 'map.dmnmap'
        views = _make_map(map_file, image_size, contexts)
        cmd = [sys.executable, '-m', 'dmn_localizer', 'run', 'localize', '--map-file',
               str(map_file), '--model', str(model_path),
               '-p', f'global_num_particles:={particles}',
               '-p', 'update_min_d:=0.0', '-p', 'update_min_a:=0.0',
               '-p', 'force_update_when_still:=true', '-p', 'publish_particles:=false',
               '-p', f'precision:={precision}', '-p', 'always_reset_initial_pose:=true',
               '-p', 'save_pose_rate:=0.0', '-p', 'odom_source:=topic',
               *(a for p in params for a in ('-p', p))]
        node = start_child(cmd, env=_env(domain_id), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain_id)
        peer = rclpy.create_node('latency_probe', context=context)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(peer)
        sent, got = {}, {}
        peer.create_subscription(PoseWithCovarianceStamped, 'amcl_pose',
                                 lambda m: got.setdefault((m.header.stamp.sec,
                                                           m.header.stamp.nanosec),
                                                          time.perf_counter()), LATCHED)
        img_pub = peer.create_publisher(Image, 'camera/image_raw', qos_profile_sensor_data)
        odom_pub = peer.create_publisher(Odometry, 'odom', 10)
        try:
            deadline = time.monotonic() + 60
            while (img_pub.get_subscription_count() == 0 and time.monotonic() < deadline
                   and node.poll() is None):
                executor.spin_once(timeout_sec=0.05)
            if node.poll() is not None or img_pub.get_subscription_count() == 0:
                raise RuntimeError('localizer node did not start: '
                                   + (node.stderr.read()[-500:] if node.poll() is not None
                                      else 'no subscription'))
            t_end = time.monotonic() + 0.5
            while time.monotonic() < t_end:
                executor.spin_once(timeout_sec=0.05)
            for i in range(frames + warmup):
                stamp = peer.get_clock().now().to_msg()
                stamp.sec, stamp.nanosec = 1000 + i, 0
                for dt in (0, 1):  # odometry covering this image's stamp
                    odom = Odometry(child_frame_id='base_link')
                    odom.header.frame_id = 'odom'
                    odom.header.stamp.sec, odom.header.stamp.nanosec = 1000 + i + dt, 0
                    odom.pose.pose = xyyaw_to_pose([0.1 * (i + dt), 0.0, 0.0])
                    odom_pub.publish(odom)
                rgb = views[i % len(views)]
                img = Image(height=image_size, width=image_size, encoding='rgb8',
                            step=3 * image_size, data=rgb.tobytes())
                img.header.stamp, img.header.frame_id = stamp, 'camera_optical_frame'
                key = (stamp.sec, stamp.nanosec)
                sent[key] = time.perf_counter()
                img_pub.publish(img)
                # closed loop: the next image only after this pose (or 5 s), then a pause,
                # so queueing in front of a slow node never adds to the latency
                # (spin_once returns when the pose arrives; a longer timeout only saves the
                # probe's wake-ups, which would take CPU from the node under test)
                t_next = time.monotonic() + 5.0
                while key not in got and time.monotonic() < t_next:
                    executor.spin_once(timeout_sec=0.1)
                t_next = time.monotonic() + 1.0 / rate_hz
                while time.monotonic() < t_next:
                    executor.spin_once(timeout_sec=0.01)
            t_end = time.monotonic() + 5.0
            while len(got) < len(sent) and time.monotonic() < t_end:
                executor.spin_once(timeout_sec=0.05)
        finally:
            executor.shutdown()
            peer.destroy_node()
            rclpy.try_shutdown(context=context)
            stop_children([node], timeout=15)  # `run` stops its node process, then exits
    keys = sorted(sent)[warmup:]
    lat = np.array([1e3 * (got[k] - sent[k]) for k in keys if k in got])
    if lat.size == 0:
        raise RuntimeError('no pose came back from the localizer node')
    return {'path': 'node', 'K': particles, 'Nc': contexts, 'precision': precision,
            'frames': len(keys),
            'received': int(lat.size), 'rate_hz': rate_hz,
            'p50_ms': float(np.percentile(lat, 50)), 'p95_ms': float(np.percentile(lat, 95)),
            'mean_ms': float(lat.mean()), 'max_ms': float(lat.max())}
