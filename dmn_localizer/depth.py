"""Depth images as column depths (no ROS): what an RGB-D camera gives the aligned model.

The aligned observation model (:mod:`dmn_localizer.model.aligned`) describes each image column
by one depth: the distance, along the optical axis, of the surface the column's horizontal ray
hits. A depth image registered to the colour image (same size and field of view, e.g. an
RGB-D camera's ``aligned_depth_to_color`` topic) gives it directly: in a level camera, the rows
around the principal point see that surface, and on a vertical surface the depth along the
optical axis is the same at every height. :func:`depth_image_columns` takes the median of the valid
readings in a band of rows around the horizon for each of ``columns`` column bins; a bin
without a valid reading is +inf (nothing within the sensor's range: the model raises its own
prediction there to the ``depth_range`` parameter, or keeps it). NaN means no depth frame.

Encodings follow REP-118: ``32FC1`` in metres, ``16UC1`` (and ``mono16``) in millimetres;
0, NaN and infinity mean "no reading". :class:`DepthBuffer` pairs depth frames with colour
images by stamp, as the nodes and ``replay`` need.
"""
import numpy as np

from dmn_localizer.images import ImageError, raw_rows
from dmn_localizer.mapping.sync import nearest_within

DEPTH_ENCODINGS = {'32FC1': (np.dtype('<f4'), 1.0), '16UC1': (np.dtype('<u2'), 1e-3),
                   'mono16': (np.dtype('<u2'), 1e-3)}
BAND_SHARE = 0.05     # the band of rows read: the horizon row +- this share of the height
MIN_DEPTH_M = 0.05    # readings nearer than this (and 0) count as missing


def raw_to_depth(encoding, height, width, step, data, is_bigendian=False):
    """A raw depth frame (sensor_msgs/Image fields) -> (H, W) float32 metres, NaN where the
    sensor has no reading."""
    if encoding not in DEPTH_ENCODINGS:
        raise ImageError(f'unsupported depth encoding {encoding!r} (supported: '
                         f'{", ".join(sorted(DEPTH_ENCODINGS))})')
    dtype, scale = DEPTH_ENCODINGS[encoding]
    if is_bigendian:
        dtype = dtype.newbyteorder('>')
    rows = raw_rows(encoding, height, width, step, data, dtype.itemsize, 'depth image')
    depth = np.ascontiguousarray(rows).view(dtype).reshape(rows.shape[0], int(width))
    depth = depth.astype(np.float32) * scale
    depth[~np.isfinite(depth) | (depth < MIN_DEPTH_M)] = np.nan
    return depth


def depth_image_columns(depth, columns, horizon_row=None, band_share=BAND_SHARE):
    """(columns,) float32 depths (m) of a depth image (H, W) registered to the colour image:
    the median of the valid readings of rows ``horizon_row +- band_share * H`` (default
    horizon: the middle row) in each of ``columns`` equal column bins, left to right; +inf for
    a bin without a reading (nothing within the sensor's range)."""
    depth = np.asarray(depth, np.float32)
    if depth.ndim != 2 or min(depth.shape) < 1:
        raise ImageError(f'a depth image must be (H, W), got shape {depth.shape}')
    h, w = depth.shape
    if columns < 1 or columns > w:
        raise ImageError(f'{columns} columns from a depth image {w} pixels wide')
    centre = (h - 1) / 2.0 if horizon_row is None else float(horizon_row)
    half = max(0.5, band_share * h)
    lo, hi = int(np.clip(np.floor(centre - half + 0.5), 0, h - 1)), \
        int(np.clip(np.ceil(centre + half - 0.5), 0, h - 1))
    band = depth[lo:hi + 1]
    edges = np.linspace(0, w, columns + 1).round().astype(int)
    out = np.full(columns, np.inf, np.float32)
    for j in range(columns):
        values = band[:, edges[j]:edges[j + 1]]
        values = values[np.isfinite(values)]
        if values.size:
            out[j] = np.median(values)
    return out


def pool_columns(depths, columns):
    """Column depths (M, W) (m; +inf: no reading, NaN: no frame) -> (M, ``columns``): the
    median of each group of W / ``columns`` neighbouring columns, +inf counted as a value and
    NaN ignored (of an even count the lower one: the nearer surface; NaN when the whole group
    is NaN). ValueError unless W is a multiple of ``columns``."""
    depths = np.asarray(depths, np.float32)
    if depths.ndim != 2 or depths.shape[1] % columns:
        raise ValueError(f'{depths.shape[-1]} depth columns do not split into {columns} '
                         'columns')
    m, w = depths.shape
    groups = np.sort(depths.reshape(m, columns, w // columns), -1)   # NaN sorts last
    pick = np.clip((np.sum(~np.isnan(groups), -1) - 1) // 2, 0, None)
    return np.take_along_axis(groups, pick[..., None], -1)[..., 0]


def message_columns(msg, columns):
    """:func:`depth_image_columns` of a sensor_msgs/Image depth message (an rclpy or a
    rosbags one: the same fields)."""
    return depth_image_columns(raw_to_depth(msg.encoding, msg.height, msg.width, msg.step,
                                            msg.data, bool(msg.is_bigendian)), columns)


class DepthBuffer:
    """The column depths of recent depth frames, by stamp: :meth:`at` gives the frame nearest
    to a colour image's stamp within ``tolerance_s`` (None: no such frame)."""

    def __init__(self, tolerance_s=0.05, max_frames=30):
        self.tolerance = float(tolerance_s)
        self.max_frames = int(max_frames)
        self._stamps, self._columns = [], []   # sorted by stamp, searched without a copy

    def __len__(self):
        return len(self._stamps)

    def add(self, stamp, columns):
        if self._stamps and stamp < self._stamps[-1]:
            self._stamps.clear()   # time went backwards (bag loop, sim reset): start over
            self._columns.clear()
        self._stamps.append(float(stamp))
        self._columns.append(np.asarray(columns, np.float32))
        if len(self._stamps) > self.max_frames:
            del self._stamps[0], self._columns[0]

    def at(self, stamp):
        best = nearest_within(self._stamps, stamp, self.tolerance)
        return None if best is None else self._columns[best]


__all__ = ['DEPTH_ENCODINGS', 'DepthBuffer', 'depth_image_columns', 'message_columns',
           'pool_columns', 'raw_to_depth']
