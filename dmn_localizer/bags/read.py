"""Read image-pose pairs from rosbag2 bags (sqlite3 or mcap) with ``rosbags``.

Images: ``sensor_msgs/msg/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) or
``sensor_msgs/msg/CompressedImage``; poses: ``geometry_msgs/msg/PoseStamped``,
``geometry_msgs/msg/PoseWithCovarianceStamped`` or ``nav_msgs/msg/Odometry``. Each image is
paired with the pose of the nearest header stamp in the same bag, within ``max_dt_s``. Bad
messages (undecodable, wrong size, unknown encoding, non-finite pose) and images without a pose
are counted, never fatal. With a depth topic (an RGB-D camera's registered depth image), each
pair also gets the column depths (:func:`~dmn_localizer.depth.message_columns`, one per column of
the resized image) of the depth frame nearest to the image's stamp within a tolerance (NaN: no
such frame, +inf: no reading in that column).

The camera mounting comes from ``/tf_static`` when the bag has it (:func:`camera_mounting`):
the planar pose of the images' frame in the robot base frame, so that poses of the base
become poses of the camera, as the mapper's ``camera_offset_*`` parameters do.
"""
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dmn_localizer.bags import messages as M
from dmn_localizer.depth import message_columns
from dmn_localizer.util.errors import UserError
from dmn_localizer.geometry import compose, quaternion_to_yaw
from dmn_localizer.localization.camera import hfov_from_intrinsics
from dmn_localizer.images import ImageError, compressed_to_rgb, raw_to_rgb, resize_square
from dmn_localizer.localization.transforms import (Transform, TransformBuffer, TransformError,
                                                   camera_planar_pose)
from dmn_localizer.mapping.sync import nearest_within

log = logging.getLogger(__name__)

POSE_TYPES = (M.POSE_STAMPED, M.POSE_COV_STAMPED, M.ODOMETRY)
TF_STATIC = '/tf_static'
BASE_FRAME = 'base_link'   # the robot base frame of REP-105 (Odometry says its own)
IMAGE_TYPES = (M.IMAGE, M.COMPRESSED_IMAGE)


@dataclass
class Pairs:
    """Image-pose pairs: images (N, S, S, 3) uint8, poses (N, 3) float64 (x, y, yaw) in the pose
    topic's frame, stamps (N,) int64 ns, bag (N,) int32 index of the source bag; counts of
    read/bad/missing messages."""
    images: np.ndarray
    poses: np.ndarray
    stamps: np.ndarray
    bag: np.ndarray
    counts: dict = field(default_factory=dict)
    frame_ids: tuple = ()    # the pose messages' frames (one, when the bags share a frame)
    # horizontal fields of view (deg) of the bags' camera_info, one per bag that has one
    hfov_deg: tuple = ()
    # (N, S) float32 column depths (m) of a depth topic (NaN: no depth frame, +inf: no
    # reading in that column); None when read without one
    depths: np.ndarray = None


def open_bag(path):
    """An opened ``rosbags`` reader of the bag ``path`` (close it after use); UserError naming
    the bag when it does not exist or cannot be read."""
    from rosbags.highlevel import AnyReader
    if not os.path.exists(path):
        raise UserError(f'{path}: no such bag')
    try:
        reader = AnyReader([Path(path)], default_typestore=M.TYPESTORE)
        reader.open()
    except Exception as exc:   # rosbags raises several types for unreadable bags
        raise UserError(f'{path}: not a readable rosbag2 bag ({exc})') from None
    return reader


def decode_image(msg, msgtype):
    """RGB (H, W, 3) uint8 of an Image/CompressedImage message, or None if it is bad."""
    try:
        if msgtype == M.COMPRESSED_IMAGE:
            return compressed_to_rgb(msg.data, msg.format)
        return raw_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    except ImageError:
        return None


def _pose_of(msg, msgtype):
    p = msg.pose if msgtype == M.POSE_STAMPED else msg.pose.pose
    q = p.orientation
    pose = (p.position.x, p.position.y, quaternion_to_yaw(q.x, q.y, q.z, q.w))
    return pose if all(math.isfinite(v) for v in pose) else None


def camera_intrinsics(reader, image_topic):
    """``(width, fx)`` of the first ``sensor_msgs/CameraInfo`` beside ``image_topic`` (the
    ``camera_info`` topic of the same namespace, as image_transport pairs them), or None when
    the bag has none or it is unreadable."""
    info_topic = image_topic.rsplit('/', 1)[0] + '/camera_info'
    conns = [c for c in reader.connections
             if c.topic == info_topic and c.msgtype == M.CAMERA_INFO]
    for conn, _, data in reader.messages(connections=conns):
        try:
            msg = reader.deserialize(data, conn.msgtype)
            return int(msg.width), float(msg.k[0])
        except Exception:
            return None
    return None


def camera_mounting(reader, image_topic, base_frame=BASE_FRAME, where=''):
    """``base_from_camera`` (x, y, yaw) of an opened bag from its ``/tf_static`` chain from
    ``base_frame`` to the frame of the first image on ``image_topic``, or None when the bag has
    no ``/tf_static`` (a warning when it has one that does not link the two frames).

    The same rule as the localizer node's (:func:`~dmn_localizer.localization.transforms.
    camera_planar_pose`): x and y the frame's origin (the height is dropped), yaw the heading of
    the camera's optical axis: z for an optical frame (REP-103), x for a body frame.
    """
    conns = {c.topic: c for c in reader.connections}
    if TF_STATIC not in conns or conns[TF_STATIC].msgtype != M.TF or image_topic not in conns:
        return None
    buffer = TransformBuffer()
    frame = None
    for conn, _, data in reader.messages(connections=[conns[TF_STATIC], conns[image_topic]]):
        try:
            msg = reader.deserialize(data, conn.msgtype)
        except Exception:
            continue
        if conn.topic == image_topic:
            frame = msg.header.frame_id.lstrip('/')
            break
        for t in msg.transforms:
            r, p = t.transform.rotation, t.transform.translation
            try:
                buffer.set_transform(t.header.frame_id, t.child_frame_id, 0.0,
                                     Transform.make((p.x, p.y, p.z), (r.x, r.y, r.z, r.w)),
                                     static=True)
            except ValueError:
                continue
    if frame is None:
        return None
    try:
        base_from_frame = buffer.lookup(base_frame, frame)
    except TransformError:
        log.warning('%s/tf_static has no chain from %s to the image frame %s: the camera '
                    'is taken to sit at the base', where, base_frame, frame)
        return None
    try:
        return camera_planar_pose(base_from_frame, frame)
    except ValueError:
        log.warning('%s: the camera %s looks straight up or down; taken to sit at the base',
                    where, frame)
        return None


def read_pairs(paths, image_topic, pose_topic, image_size, max_dt_s=0.05, depth_topic=None,
               depth_max_dt_s=0.05):
    """Pairs from bags ``paths`` (see the module docstring); images resized to ``image_size``;
    poses are the camera's (the pose topic's base poses composed with each bag's camera
    mounting from ``/tf_static``, when it has one). ``depth_topic``: also the column depths of
    the depth frame nearest to each image within ``depth_max_dt_s`` (a bag without the topic is
    a UserError)."""
    counts = dict(images=0, poses=0, bad_images=0, bad_poses=0, images_without_pose=0)
    if depth_topic:
        counts.update(depth_images=0, bad_depth_images=0, pairs_without_depth=0)
    out_img, out_pose, out_stamp, out_bag, out_depth = [], [], [], [], []
    frame_ids = set()
    hfovs = []
    for bi, path in enumerate(paths):
        reader = open_bag(path)
        try:
            conns = {c.topic: c for c in reader.connections}
            wanted = [(image_topic, IMAGE_TYPES), (pose_topic, POSE_TYPES)]
            if depth_topic:
                wanted.append((depth_topic, (M.IMAGE,)))
            for topic, kinds in wanted:
                if topic not in conns:
                    raise UserError(f'{path}: no topic {topic} (topics: '
                                    f'{", ".join(sorted(conns))})')
                if conns[topic].msgtype not in kinds:
                    raise UserError(f'{path}: {topic} is {conns[topic].msgtype}, expected one '
                                    f'of {", ".join(kinds)}')
            pose_stamps, poses, raw, depth_frames = [], [], [], []
            base_frame = BASE_FRAME
            for conn, t, data in reader.messages(connections=[conns[topic]
                                                              for topic, _ in wanted]):
                if conn.topic == depth_topic:
                    depth_frames.append(_depth_frame(reader, conn, t, data, image_size,
                                                     counts))
                    continue
                kind = 'image' if conn.topic == image_topic else 'pose'
                counts[f'{kind}s'] += 1
                try:
                    msg = reader.deserialize(data, conn.msgtype)
                except Exception:
                    counts[f'bad_{kind}s'] += 1
                    continue
                ns = M.stamp_ns(msg.header.stamp) or t
                if kind == 'pose':
                    p = _pose_of(msg, conn.msgtype)
                    if p is None:
                        counts['bad_poses'] += 1
                        continue
                    frame_ids.add(msg.header.frame_id)
                    if conn.msgtype == M.ODOMETRY and msg.child_frame_id:
                        base_frame = msg.child_frame_id
                    pose_stamps.append(ns)
                    poses.append(p)
                else:
                    raw.append((ns, msg, conn.msgtype))
            mounting = camera_mounting(reader, image_topic, base_frame, where=path)
            intrinsics = camera_intrinsics(reader, image_topic)
            if intrinsics is not None:
                try:
                    hfovs.append(hfov_from_intrinsics(*intrinsics))
                except ValueError as exc:
                    log.warning('%s: %s; its field of view is unknown', path, exc)
        finally:
            reader.close()
        order = np.argsort(pose_stamps, kind='stable')
        ps = np.asarray(pose_stamps, np.int64)[order]
        pv = np.asarray(poses, np.float64).reshape(-1, 3)[order]
        if mounting is not None:
            pv = compose(pv, mounting)
        depth_frames = sorted((f for f in depth_frames if f is not None), key=lambda f: f[0])
        if depth_topic and not depth_frames:
            raise UserError(f'{path}: no usable depth images on {depth_topic}')
        depth_stamps = [ns for ns, _ in depth_frames]
        for ns, msg, msgtype in raw:
            img = decode_image(msg, msgtype)
            if img is None:
                counts['bad_images'] += 1
                continue
            j = int(np.searchsorted(ps, ns))
            cand = [k for k in (j - 1, j) if 0 <= k < len(ps)]
            k = min(cand, key=lambda k: abs(int(ps[k]) - ns)) if cand else None
            if k is None or abs(int(ps[k]) - ns) > max_dt_s * 1e9:
                counts['images_without_pose'] += 1
                continue
            out_img.append(resize_square(img, image_size))
            out_pose.append(pv[k])
            if depth_topic:
                d = nearest_within(depth_stamps, ns, depth_max_dt_s * 1e9)
                if d is None:
                    counts['pairs_without_depth'] += 1
                out_depth.append(depth_frames[d][1] if d is not None
                                 else np.full(image_size, np.nan, np.float32))
            out_stamp.append(ns)
            out_bag.append(bi)
    if len(frame_ids) > 1:
        log.warning('poses come in several frames %s; treating them as one', sorted(frame_ids))
    counts['pairs'] = len(out_img)
    order = np.lexsort((np.asarray(out_stamp, np.int64), np.asarray(out_bag)))
    s = int(image_size)
    depths = (np.asarray(out_depth, np.float32).reshape(-1, s)[order] if depth_topic
              else None)
    return Pairs(images=np.asarray(out_img, np.uint8).reshape(-1, s, s, 3)[order],
                 poses=np.asarray(out_pose, np.float64).reshape(-1, 3)[order],
                 stamps=np.asarray(out_stamp, np.int64)[order],
                 bag=np.asarray(out_bag, np.int32)[order], counts=counts,
                 frame_ids=tuple(sorted(frame_ids)), hfov_deg=tuple(hfovs), depths=depths)


def _depth_frame(reader, conn, t, data, image_size, counts):
    """(stamp ns, column depths (image_size,)) of one depth message, or None (counted) when it
    cannot be read."""
    counts['depth_images'] += 1
    try:
        msg = reader.deserialize(data, conn.msgtype)
        return M.stamp_ns(msg.header.stamp) or t, message_columns(msg, image_size)
    except Exception:   # undecodable message or a bad depth image (ImageError)
        counts['bad_depth_images'] += 1
        return None
