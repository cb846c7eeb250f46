#!/usr/bin/env python3
"""Soak test of the live localizer node (issue 9): replay many frames, watch memory and latency.

Starts ``localizer_node`` as its own process (a tiny random model unless ``--model``, and a
map rendered from a simulated maze), then publishes rendered camera images and matching
odometry at a fixed rate, as a robot driving back and forth along a loop, and records:

* the node's resident memory (VmRSS from /proc) every ``--sample-every`` seconds;
* end-to-end update latency: image published -> ``amcl_pose`` with that stamp received;
* the node's own diagnostics (update time, images received, updates, dropped and skipped
  frames).

The report compares the windows right after warm-up and at the end: RSS growth (criterion:
< 5 %), latency trend (criterion: the last window's mean not above the first's by more than
10 % + 2 ms) and pile-up (criterion: p99 latency below 5 frame periods, or 1 s, and poses
still coming in the last window). It also counts frames lost in transport (sensor-data QoS
drops images the node is too busy to take), dropped by the node (a newer image replaced the
one waiting for odometry) and skipped (no odometry around the stamp). Size ``--rate`` so that
the node keeps up (update time in the report) if drops should be zero.

    .venv/bin/python scripts/soak.py --frames 10000 --rate 10 --out soak.json

Runs on CPU by default (``--device``); set ``--domain-id`` if several soaks share a machine.
Exit status 0 when every criterion holds, 1 otherwise.
"""
import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--frames', type=int, default=10000, help='frames to publish')
    p.add_argument('--rate', type=float, default=10.0, help='frames per second (wall clock)')
    p.add_argument('--speed', type=float, default=1.0,
                   help='robot speed (m/s): loop poses are 0.5 m apart, so stamps advance '
                   '0.5 / speed s per frame whatever the rate')
    p.add_argument('--particles', type=int, default=64, help='num_particles (tracking)')
    p.add_argument('--global-particles', type=int, default=64,
                   help='global_num_particles (default = --particles: a steady workload even '
                   'when the collapse monitor re-initialises globally)')
    p.add_argument('--health-samples', type=int, default=16, help='health_samples')
    p.add_argument('--model', help='model file (default: a tiny random model)')
    p.add_argument('--device', default='cpu', help="node's device parameter")
    p.add_argument('--contexts', type=int, default=40, help='map contexts')
    p.add_argument('--loop', type=int, default=300, help='distinct poses of the driven loop')
    p.add_argument('--seed', type=int, default=5, help='maze world seed')
    p.add_argument('--warmup', type=float, default=0.1,
                   help='share of the frames before the reference window')
    p.add_argument('--window', type=float, default=0.1,
                   help='share of the frames in the reference and final windows')
    p.add_argument('--sample-every', type=float, default=2.0, help='seconds between samples')
    p.add_argument('--domain-id', type=int, default=int(os.environ.get('ROS_DOMAIN_ID', 77)))
    p.add_argument('--out', type=Path, help='write the report and time series as JSON')
    return p.parse_args(argv)


def rss_mb(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return math.nan


def prepare(args, tmp):
    """Model file, map file and the loop's poses and images."""
    import torch
    from dmn_localizer.mapping.view_map import ViewMap
    from dmn_localizer.model.config import DMNConfig
    from dmn_localizer.model.dmn import DMN
    from dmn_localizer.model.io import load_model, save_model
    from dmn_localizer.sim.trajectories import random_trajectory
    from dmn_localizer.sim.world import make_world
    if args.model:
        model_file = Path(args.model)
        size = load_model(model_file).config.image_size
    else:
        torch.manual_seed(0)
        model_file = tmp / 'tiny.safetensors'
        save_model(DMN(DMNConfig()), model_file)
        size = DMNConfig().image_size
    rng = np.random.default_rng(args.seed)
    with make_world('mazes', args.seed, image_size=size) as world:
        ctx = world.sample_free_poses(rng, args.contexts).astype(np.float64)
        vm = ViewMap()
        for img, pose in zip(world.render(ctx), ctx):
            vm.add(img, pose)
        loop = random_trajectory(world.spec, rng, args.loop, step_m=0.5).astype(np.float64)
        images = world.render(loop)
    map_file = tmp / 'soak.dmnmap'
    vm.save(map_file)
    return model_file, map_file, loop, images, size


def sample(t, frame, pid, diag, published):
    """One point of the time series: node RSS and the node's latest diagnostics."""
    return dict(t=round(t, 2), frame=frame, rss_mb=round(rss_mb(pid), 2),
                update_ms_mean=float(diag.get('update_ms_mean', 'nan')),
                updates=int(diag.get('updates', 0)),
                images_received=int(diag.get('images_received', 0)),
                dropped=int(diag.get('dropped_images', 0)),
                skipped=int(diag.get('skipped_images', 0)), pending=len(published))


def window_mean(values, frames, lo, hi):
    sel = [v for v, f in zip(values, frames) if lo <= f < hi and math.isfinite(v)]
    return float(np.mean(sel)) if sel else math.nan


def main(argv=None):
    args = parse_args(argv)
    from dmn_localizer.util.processes import localhost_discovery
    os.environ.update(ROS_DOMAIN_ID=str(args.domain_id), PYTHONUNBUFFERED='1')
    localhost_discovery(os.environ)
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from nav_msgs.msg import Odometry
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from dmn_localizer.geometry import compose, relative
    from dmn_localizer.nodes.common import LATCHED
    from dmn_localizer.nodes.conversions import sec_to_stamp, xyyaw_to_pose

    tmp = Path(tempfile.mkdtemp(prefix='dmn_soak_'))
    model_file, map_file, loop, images, size = prepare(args, tmp)
    # drive the loop forth and back: continuous motion for any number of frames
    order = np.concatenate([np.arange(len(loop)), np.arange(len(loop) - 2, 0, -1)])
    node_cmd = [sys.executable, '-m', 'dmn_localizer.nodes.localizer_node', '--ros-args',
                '-r', '__node:=localizer', '-p', f'model:={model_file}',
                '-p', f'map_file:={map_file}', '-p', f'device:={args.device}',
                '-p', f'image_size:={size}', '-p', f'num_particles:={args.particles}',
                '-p', f'global_num_particles:={args.global_particles}',
                '-p', f'health_samples:={args.health_samples}', '-p', 'update_min_d:=0.0',
                '-p', 'update_min_a:=0.0', '-p', 'force_update_when_still:=true',
                '-p', 'always_reset_initial_pose:=true', '-p', 'save_pose_rate:=0.0',
                '-p', 'odom_source:=topic']
    node = subprocess.Popen(node_cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)

    rclpy.init()
    peer = rclpy.create_node('soak_driver')
    img_pub = peer.create_publisher(Image, 'camera/image_raw', qos_profile_sensor_data)
    odom_pub = peer.create_publisher(Odometry, 'odom', 50)
    published = {}          # stamp ns -> monotonic publish time
    latencies = []          # (frame, ms)
    diag = {}

    def on_pose(msg):
        ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        t = published.pop(ns, None)
        if t is not None:
            latencies.append((frame_of[ns], 1e3 * (time.monotonic() - t)))

    def on_diag(msg):
        for status in msg.status:
            if status.name.startswith('localizer'):
                diag.update({kv.key: kv.value for kv in status.values},
                            _level=status.level[0] if isinstance(status.level, bytes)
                            else int(status.level), _message=status.message)

    peer.create_subscription(PoseWithCovarianceStamped, 'amcl_pose', on_pose, LATCHED)
    peer.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    frame_of = {}

    def spin_until(predicate, timeout):
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            rclpy.spin_once(peer, timeout_sec=0.02)
        return predicate()

    samples = []
    report = {}
    try:
        if not spin_until(lambda: img_pub.get_subscription_count() > 0
                          and odom_pub.get_subscription_count() > 0 and diag, 120):
            raise SystemExit(f'the node did not come up: {node.stderr.read()[-2000:]}'
                             if node.poll() is not None else 'the node did not come up')
        # start tracking at the true pose (a random model never converges globally)
        init = PoseWithCovarianceStamped()
        init.header.frame_id = 'map'
        init.pose.pose = xyyaw_to_pose(loop[order[0]])
        init.pose.covariance[0] = init.pose.covariance[7] = 0.04
        init.pose.covariance[35] = 0.01
        init_pub = peer.create_publisher(PoseWithCovarianceStamped, 'initialpose', 10)
        spin_until(lambda: init_pub.get_subscription_count() > 0, 30)
        init_pub.publish(init)
        spin_until(lambda: False, 0.5)
        msgs = []
        for img in images:
            msgs.append(Image(height=size, width=size, encoding='rgb8', step=3 * size,
                              data=img.tobytes()))
        period = 1.0 / args.rate
        odom = np.zeros(3)
        prev = loop[order[0]]
        t0 = time.monotonic()
        next_sample = t0
        print(f'soak: {args.frames} frames at {args.rate:g} Hz, K={args.particles}, node pid '
              f'{node.pid}', flush=True)
        for i in range(args.frames):
            due = t0 + i * period
            while True:
                now = time.monotonic()
                if now >= due:
                    break
                rclpy.spin_once(peer, timeout_sec=min(0.01, due - now))
            pose = loop[order[i % len(order)]]
            if i:
                odom = compose(odom, relative(prev, pose))
            prev = pose
            stamp_s = 1000.0 + i * 0.5 / args.speed
            stamp = sec_to_stamp(stamp_s)
            ns = stamp.sec * 1_000_000_000 + stamp.nanosec
            o = Odometry(child_frame_id='base_link')
            o.header.frame_id, o.header.stamp = 'odom', stamp
            o.pose.pose = xyyaw_to_pose(odom)
            odom_pub.publish(o)
            m = msgs[order[i % len(order)]]
            m.header.stamp, m.header.frame_id = stamp, 'camera_optical_frame'
            published[ns] = time.monotonic()
            frame_of[ns] = i
            img_pub.publish(m)
            if now >= next_sample:
                next_sample += args.sample_every
                samples.append(sample(now - t0, i, node.pid, diag, published))
                if len(samples) % 10 == 1:
                    s = samples[-1]
                    print(f"  frame {i}: rss {s['rss_mb']:.1f} MB, update "
                          f"{s['update_ms_mean']:.1f} ms, received {s['images_received']}, "
                          f"dropped {s['dropped']}", flush=True)
                for k in [k for k, v in published.items() if now - v > 30.0]:
                    del published[k]  # never answered (dropped): keep the dict bounded
            if node.poll() is not None:
                raise SystemExit(f'the node died (status {node.returncode})')
        spin_until(lambda: False, 3.0)  # let the last updates and diagnostics arrive
        samples.append(sample(time.monotonic() - t0, args.frames, node.pid, diag, published))
        report = summarise(args, samples, latencies)
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
        try:
            _, err = node.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
            _, err = node.communicate()
        peer.destroy_node()
        rclpy.try_shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    report['node_exit_status'] = node.returncode
    if 'Traceback' in (err or ''):
        report['node_traceback'] = err[-3000:]
    print(json.dumps(report, indent=2))
    if args.out:
        from dmn_localizer.util.atomic import write_text
        write_text(args.out, json.dumps(dict(report=report, samples=samples,
                                             latencies=latencies), indent=1) + '\n')
    ok = all(report.get(k) for k in ('rss_ok', 'latency_ok', 'pileup_ok')) \
        and node.returncode == 0 and 'node_traceback' not in report
    return 0 if ok else 1


def summarise(args, samples, latencies):
    n = args.frames
    w0 = int(args.warmup * n)
    w1 = w0 + max(1, int(args.window * n))
    e0 = n - max(1, int(args.window * n))
    s_frames = [s['frame'] for s in samples]
    rss = [s['rss_mb'] for s in samples]
    rss_ref = window_mean(rss, s_frames, w0, w1)
    rss_end = window_mean(rss, s_frames, e0, n + 1)
    lat_frames = [f for f, _ in latencies]
    lat = [v for _, v in latencies]
    lat_ref, lat_end = window_mean(lat, lat_frames, w0, w1), window_mean(lat, lat_frames, e0, n)
    upd = [s['update_ms_mean'] for s in samples]
    sel = [(f, v) for f, v in latencies if f >= w0]
    slope = float(np.polyfit([f for f, _ in sel], [v for _, v in sel], 1)[0] * 1000) \
        if len(sel) > 10 else math.nan
    last = samples[-1]
    report = dict(
        frames=n, rate_hz=args.rate, particles=args.particles, seconds=last['t'],
        rss_mb_after_warmup=round(rss_ref, 1), rss_mb_end=round(rss_end, 1),
        rss_mb_max=round(max(rss), 1),
        rss_growth_pct=round(100 * (rss_end - rss_ref) / rss_ref, 2),
        e2e_latency_ms_after_warmup=round(lat_ref, 1), e2e_latency_ms_end=round(lat_end, 1),
        e2e_latency_ms_p50=round(float(np.percentile(lat, 50)), 1) if lat else math.nan,
        e2e_latency_ms_p99=round(float(np.percentile(lat, 99)), 1) if lat else math.nan,
        e2e_latency_slope_ms_per_1000_frames=round(slope, 3),
        node_update_ms_after_warmup=round(window_mean(upd, s_frames, w0, w1), 1),
        node_update_ms_end=round(window_mean(upd, s_frames, e0, n + 1), 1),
        images_received=last['images_received'], updates=last['updates'],
        poses_received=len(latencies), frames_lost_in_transport=n - last['images_received'],
        frames_dropped_by_node=last['dropped'], frames_skipped_no_odometry=last['skipped'],
        poses_missing_at_end=n - len(latencies))
    report['rss_ok'] = bool(report['rss_growth_pct'] < 5.0)
    report['latency_ok'] = bool(lat_end <= 1.1 * lat_ref + 2.0)
    # no pile-up: every frame the node got was answered or deliberately dropped (newest wins),
    # and latency stays within a few frame periods
    # no pile-up: latency stays within a few frame periods, and the node still answers at
    # the end (each image is used, or dropped when a newer one arrives: never queued)
    report['pileup_ok'] = bool(report['e2e_latency_ms_p99'] < 1000.0 * max(5.0 / args.rate, 1.0)
                               and any(f >= e0 for f in lat_frames))
    return report


if __name__ == '__main__':
    sys.exit(main())
