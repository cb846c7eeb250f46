"""``replay --live``: localize over a bag through the real localizer node over DDS.

Pure orchestration (no rclpy here): two child processes,

- the localizer node, started exactly as ``dmn-localizer run localize`` starts it (same
  command line, ``config/localizer.yaml`` plus ``-p`` overrides), with the map saved to
  ``OUT/map.dmnmap``;
- :mod:`dmn_localizer.nodes.tools.bag_player`, which publishes the bag's image and odometry
  messages unchanged (original header stamps) at the bag's pace times ``rate`` and records the
  node's ``amcl_pose`` (and particle snapshots, ``/diagnostics``) into a temporary .npz.

The node runs on wall time (``use_sim_time`` false): it uses only header stamps for filtering,
pairing and its outputs, so no /clock is needed. The recorded estimates are paired with the
bag's ground truth at their header stamps, giving a
:class:`~dmn_localizer.replay.offline.Track` for the same metrics and outputs as offline.
Children run in their own session and get SIGINT when this process dies (Linux); Ctrl-C or any
error here stops them (SIGINT, then SIGTERM, then SIGKILL) before the exception propagates, so
no node is left running.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dmn_localizer.bags import messages as M
from dmn_localizer.util.errors import UserError
from dmn_localizer.replay import offline as core
from dmn_localizer.util.atomic import atomic_path
from dmn_localizer.util.processes import node_command, start_child, stop_children

STOP_TIMEOUT_S = 10.0


# Runs first in each child: ask Linux to send it SIGINT when this process dies (so a killed
# replay never leaves a node behind), then exec the real command (the setting survives exec).
# A wrapper rather than preexec_fn, which is unsafe in a process with threads (torch's).
def child_env(domain_id=None):
    env = dict(os.environ)
    env['PYTHONUNBUFFERED'] = '1'
    # pip-only ROS: the venv is an ament prefix (message packages built into it)
    prefix = str(Path(sys.prefix))
    if prefix not in env.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        env['AMENT_PREFIX_PATH'] = os.pathsep.join(
            p for p in (prefix, env.get('AMENT_PREFIX_PATH', '')) if p)
    if domain_id is not None:
        env['ROS_DOMAIN_ID'] = str(domain_id)
    return env


def _start(cmd, env, **kwargs):
    """A child in its own session (a terminal's Ctrl-C reaches only us: we stop it)."""
    return start_child(cmd, env=env, start_new_session=True, **kwargs)


def stop(procs, timeout=STOP_TIMEOUT_S):
    stop_children(procs, timeout)


def _last_line(path):
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors='replace').splitlines()]
    except OSError:
        return ''
    lines = [ln for ln in lines if ln]
    errors = [ln for ln in lines if 'error' in ln.lower()]
    return (errors or lines or [''])[-1][:300]


def check_types(types, topics):
    """The node takes nav_msgs/Odometry and Image or CompressedImage ({topic: msgtype})."""
    if types[topics.odom] != M.ODOMETRY:
        raise UserError(f'--live: {topics.odom} is {types[topics.odom]}; the localizer node '
                        f'takes {M.ODOMETRY}')
    if types[topics.image] not in (M.IMAGE, M.COMPRESSED_IMAGE):
        raise UserError(f'--live: {topics.image} is {types[topics.image]}; the localizer '
                        f'node takes {M.IMAGE} or {M.COMPRESSED_IMAGE}')


def node_params(k, size, topics, image_type, device, policy=None, base_from_camera=None):
    """Parameter overrides for the replay: particles, inputs, the update policy
    (``{'update_min_d': m, 'update_min_a': rad}``; None: the node's parameters file) and the
    camera mounting (x, y, yaw; None: the parameters file's); the node neither starts from nor
    saves a last pose."""
    image_topic, transport = topics.image, 'raw'
    if image_type == M.COMPRESSED_IMAGE:
        transport = 'compressed'
    return [f'num_particles:={k}', f'global_num_particles:={k}', f'image_size:={size}',
            f'image_topic:={image_topic}', f'image_transport:={transport}',
            'odom_source:=topic', f'odom_topic:={topics.odom}', f'device:={device}',
            'always_reset_initial_pose:=true', 'save_pose_rate:=0.0',
            *([f'depth_topic:={topics.depth}'] if topics.depth else []),
            *(f'{name}:={float(value)}' for name, value in (policy or {}).items()),
            *(f'camera_offset_{name}:={float(value)}' for name, value in
              zip(('x', 'y', 'yaw'), () if base_from_camera is None else base_from_camera))]


def localize_live(view_map, stream, bag, model_path, out, topics, mode='global', particles=2048,
                  image_size=32, rate=1.0, device='auto', domain_id=None,
                  startup_timeout=180.0, settle=10.0, quiet=False, policy=None,
                  sigma=core.TRACKING_SIGMA, params_file=None):
    """Run the node over ``bag`` with its parameters file ``params_file`` (default
    config/localizer.yaml); returns (Track, extra metrics). Writes OUT/map.dmnmap and, when
    the node has stopped, OUT/node.log (its console output)."""
    from dmn_localizer.util.resources import config_path

    if not rate > 0:
        raise UserError('--rate must be > 0')
    check_types({topics.image: stream.image_type, topics.odom: stream.odom_type}, topics)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # this run replaces map.dmnmap and node.log at once: an older metrics.json must not
    # vouch for them if the run is interrupted (metrics.json is written last)
    (out / 'metrics.json').unlink(missing_ok=True)
    map_file = (out / 'map.dmnmap').resolve()
    view_map.save(map_file)
    belief = core.initial_belief(stream, mode, sigma=sigma)
    node_args = argparse.Namespace(
        map_file=str(map_file), model=str(Path(model_path).resolve()), namespace='',
        use_sim_time=False, log_level='info',
        param=node_params(particles, image_size, topics, stream.image_type, device, policy,
                          stream.base_from_camera))
    node_cmd = node_command('dmn_localizer.nodes.localizer_node', 'localizer',
                            Path(params_file or config_path('localizer.yaml')).resolve(),
                            node_args)
    env = child_env(domain_id)
    with tempfile.TemporaryDirectory(prefix='dmn_live_') as tmp:
        record, log_path = Path(tmp) / 'record.npz', Path(tmp) / 'node.log'
        player_cmd = [sys.executable, '-m', 'dmn_localizer.nodes.tools.bag_player',
                      '--bag', str(bag), '--topic', topics.image, '--topic', topics.odom,
                      *(['--topic', topics.depth] if topics.depth else []),
                      '--image-topic', topics.image, '--record', str(record),
                      '--rate', repr(float(rate)), '--startup-timeout', str(startup_timeout),
                      '--settle', str(settle)]
        if belief is not None:
            player_cmd += ['--initial-pose', *(repr(float(v)) for v in (*belief[0], *belief[1]))]
        procs = []
        try:
            with open(log_path, 'w') as log:
                procs.append(_start(node_cmd, env, stdout=log, stderr=subprocess.STDOUT))
            node = procs[0]
            player = _start(player_cmd, env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL if quiet else None)
            procs.insert(0, player)
            while player.poll() is None:
                if node.poll() is not None:
                    raise UserError(f'the localizer node exited with status {node.returncode}'
                                    f': {_last_line(log_path)}')
                time.sleep(0.1)
            if player.returncode == 3:
                raise UserError('the localizer node did not come up or went away: '
                                f'{_last_line(log_path) or "see node.log"}')
            if player.returncode != 0:
                raise UserError(f'the bag player failed with status {player.returncode}')
            with np.load(record) as z:
                rec = {k: z[k] for k in z.files}
            if len(rec['est_stamps']) == 0:
                diag = json.loads(str(rec['diagnostics']))
                raise UserError('the localizer node published no estimate ('
                                + (diag.get('message') or _last_line(log_path) or 'no reason')
                                + f'); see {out / "node.log"}')
        finally:
            stop(procs)
            if log_path.exists():
                with atomic_path(out / 'node.log') as tmp_log:
                    shutil.copyfile(log_path, tmp_log)
    node_status = procs[-1].returncode
    return track_from_recording(rec, stream), live_metrics(rec, rate, node_status)


def track_from_recording(rec, stream):
    """Pair the recorded estimates with the bag's ground truth at their header stamps."""
    truth = core.truth_buffer(stream)
    track = core.Track()
    for stamp, est, cov in zip(rec['est_stamps'], rec['estimates'], rec['covariances']):
        gt = truth.pose_at(stamp)
        if gt is None:
            continue
        track.stamps.append(float(stamp))
        track.estimates.append(est)
        track.covariances.append(cov)
        track.truth.append(gt)
    for i, stamp in enumerate(rec['snapshot_stamps']):
        particles = rec[f'snapshot_{i}']
        track.snapshots.append((float(stamp), particles,
                                np.full(len(particles), 1.0 / max(1, len(particles)))))
    # frames = images the node processed (each gives an estimate: it updates on every image);
    # time = first image published .. last estimate received
    track.frames = len(rec['est_stamps'])
    if track.frames and len(rec['image_published']):
        track.seconds = float(rec['est_received'][-1] - rec['image_published'][0])
    return track


def live_metrics(rec, rate, node_status):
    """What only a live run has: delivery, latency, the node's own counters."""
    img_stamps, img_wall = rec['image_stamps'], rec['image_published']
    latencies = []
    for stamp, received in zip(rec['est_stamps'], rec['est_received']):
        i = int(np.argmin(np.abs(img_stamps - stamp))) if len(img_stamps) else -1
        if i >= 0 and abs(img_stamps[i] - stamp) < 1e-4:
            latencies.append(received - img_wall[i])
    diag = json.loads(str(rec['diagnostics'])) if 'diagnostics' in rec else {}

    def counter(key):
        try:
            return int(diag[key])
        except (KeyError, ValueError):
            return None
    return {
        'live': True, 'rate': rate,
        'images_published': int(len(img_stamps)),
        'images_without_estimate': int(len(img_stamps) - len(rec['est_stamps'])),
        'node_images_received': counter('images_received'),
        'node_dropped_images': counter('dropped_images'),
        'node_skipped_images': counter('skipped_images'),
        **({'node_images_with_depth': counter('images_with_depth'),
            'node_images_without_depth': counter('images_without_depth')}
           if 'images_with_depth' in diag else {}),
        'latency_mean_s': float(np.mean(latencies)) if latencies else None,
        'latency_max_s': float(np.max(latencies)) if latencies else None,
        'node_exit_status': node_status,
    }
