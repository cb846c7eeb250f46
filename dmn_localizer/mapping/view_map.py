"""The view-embedding map: a set of (context image, planar viewpoint) pairs, plus a file format.

Paper Section IV: the map m = <V_i, s_i> holds one view embedding per context and its
viewpoint. The file stores the context *images* and poses (embeddings are recomputed with
whatever model loads the map, so one map serves every model) and, optionally, the embeddings
of the model named by ``model_id`` for a fast start.

File format (``.dmnmap``, a safetensors file; loading never executes code):
  tensors  ``poses`` float64 (N, 3) map-frame (x, y, yaw); ``images`` uint8 (N, H, W, 3) RGB;
           optionally ``embeddings`` float32 (N, ...) from the model ``model_id``, and
           ``depths`` float32 (N, W): each context's column depths (m) from a depth camera
           (:mod:`dmn_localizer.depth`; NaN: no reading), which models that take depth use
           instead of their predictions.
  metadata ``format`` = 'dmn_localizer.map', ``version`` = '1', ``frame_id``, ``model_id``,
           ``sha256`` (hex digest of the tensors, see :func:`tensors_digest`; files written
           before it existed lack it and are read without the check).

Loading parses the safetensors header itself (length, JSON, offsets within the file) before
handing the bytes to safetensors, and checks format, version, checksum and shapes: any
problem is one :class:`~dmn_localizer.util.errors.FileFormatError` naming the file and the problem.
Saving is atomic (temporary file, fsync, rename): a crash leaves the previous file.

A map serves the models whose ``image_size`` equals its images' side:
:func:`check_model_image_size` and :func:`check_map_image_size` are the one check of that
for the nodes and replay.
"""
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dmn_localizer.util.errors import FileFormatError, UserError
from dmn_localizer.util.atomic import atomic_path
from dmn_localizer.util.safetensors_file import read_header

FORMAT = 'dmn_localizer.map'
VERSION = 1


def tensors_digest(tensors):
    """sha256 hex digest of ``{name: array}``: names in order, each with dtype, shape, bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f'{name}:{a.dtype.str}:{a.shape};'.encode())
        if a.size:
            h.update(memoryview(a.reshape(-1)).cast('B'))
    return h.hexdigest()


def check_model_image_size(model, image_size, model_path):
    """UserError unless the model takes ``image_size`` x ``image_size`` images."""
    if model.config.image_size != image_size:
        raise UserError(f'image_size {image_size} does not match the model {model_path} '
                        f'({model.config.image_size})')


def check_map_image_size(view_map, image_size, path):
    """FileFormatError naming ``path`` unless the map's images (if any) are ``image_size``
    x ``image_size``, the size the model takes."""
    if len(view_map) and view_map.images.shape[1:3] != (image_size, image_size):
        h, w = view_map.images.shape[1:3]
        raise FileFormatError(path, f'map images are {w}x{h}, the model takes '
                                    f'{image_size}x{image_size}')


@dataclass
class ViewMap:
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 32, 32, 3), np.uint8))
    poses: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float64))
    frame_id: str = 'map'
    model_id: str = ''
    embeddings: np.ndarray | None = None  # (N, ...) float32 of model_id, optional
    depths: np.ndarray | None = None      # (N, W) float32 measured column depths, optional

    def __len__(self):
        return len(self.poses)

    def add(self, image, pose, embedding=None, depth=None):
        """Append one context: image (H, W, 3) uint8 at the map's image size, pose (3,),
        optionally its view embedding (by the model ``model_id``; kept only while every
        context has one) and its measured column depths (W,) (m; NaN where unknown; the
        contexts without are NaN throughout)."""
        image = np.asarray(image, np.uint8)
        if len(self) and image.shape != self.images.shape[1:]:
            raise ValueError(f'context image shape {image.shape} != map {self.images.shape[1:]}')
        width = image.shape[1]
        if depth is not None or self.depths is not None:
            row = np.full((1, width), np.nan, np.float32)
            if depth is not None:
                depth = np.asarray(depth, np.float32).reshape(-1)
                if depth.shape != (width,):
                    raise ValueError(f'context depth has {depth.size} columns, the map\'s '
                                     f'images {width}')
                row[0] = depth
            old = self.depths if self.depths is not None else \
                np.full((len(self), width), np.nan, np.float32)
            self.depths = np.concatenate([old, row])
        had_all = self.embeddings is not None or len(self) == 0
        self.images = np.concatenate([self.images.reshape((-1,) + image.shape), image[None]])
        self.poses = np.concatenate([self.poses, np.asarray(pose, np.float64)[None]])
        if embedding is None or not had_all:
            self.embeddings = None  # the model that uses the map recomputes them
        else:
            e = np.asarray(embedding, np.float32)[None]
            self.embeddings = e if self.embeddings is None else np.concatenate(
                [self.embeddings, e])

    def clear(self):
        self.images = self.images[:0]
        self.poses = self.poses[:0]
        self.embeddings = self.depths = None

    def save(self, path):
        """Write the map atomically (temp file + fsync + rename)."""
        from safetensors.numpy import save_file
        tensors = {'poses': np.ascontiguousarray(self.poses, np.float64),
                   'images': np.ascontiguousarray(self.images, np.uint8)}
        if self.embeddings is not None:
            tensors['embeddings'] = np.ascontiguousarray(self.embeddings, np.float32)
        if self.depths is not None:
            tensors['depths'] = np.ascontiguousarray(self.depths, np.float32)
        meta = {'format': FORMAT, 'version': str(VERSION), 'frame_id': self.frame_id,
                'model_id': self.model_id, 'sha256': tensors_digest(tensors)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path):
        """Read a map file; any problem raises FileFormatError naming the file."""
        from safetensors import SafetensorError
        from safetensors.numpy import load as load_tensors
        path = Path(path)
        if not path.is_file():
            raise FileFormatError(path, 'no such map file')
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FileFormatError(path, f'cannot read: {exc.strerror or exc}') from None
        header = read_header(path, data, 'map file')
        meta = header.get('__metadata__') or {}
        if not isinstance(meta, dict) or meta.get('format') != FORMAT:
            fmt = meta.get('format') if isinstance(meta, dict) else None
            raise FileFormatError(path, f'not a dmn_localizer map (format {fmt!r})')
        if meta.get('version') != str(VERSION):
            raise FileFormatError(path, f"map version {meta.get('version')!r} is not "
                                        f'supported (this build reads {VERSION})')
        keys = set(header) - {'__metadata__'}
        if not {'poses', 'images'} <= keys:
            raise FileFormatError(path, 'map lacks poses or images')
        try:
            tensors = load_tensors(data)
        except (SafetensorError, ValueError, TypeError) as exc:
            raise FileFormatError(path, f'corrupted map file ({exc})') from None
        if 'sha256' in meta and tensors_digest(tensors) != meta['sha256']:
            raise FileFormatError(path, 'corrupted: the contents do not match the checksum')
        poses, images = tensors['poses'], tensors['images']
        emb, depths = tensors.get('embeddings'), tensors.get('depths')
        if poses.ndim != 2 or poses.shape[1] != 3 or images.ndim != 4 \
                or images.shape[0] != poses.shape[0] or images.shape[3] != 3 \
                or images.dtype != np.uint8 or not np.isfinite(poses).all() \
                or (emb is not None and emb.shape[:1] != poses.shape[:1]) \
                or (depths is not None and depths.shape != images.shape[:1] + images.shape[2:3]):
            raise FileFormatError(path, f'inconsistent map contents: poses {poses.shape}, '
                                        f'images {images.shape} {images.dtype}')
        return cls(images=images, poses=poses.astype(np.float64),
                   frame_id=str(meta.get('frame_id', 'map')),
                   model_id=str(meta.get('model_id', '')), embeddings=emb,
                   depths=None if depths is None else depths.astype(np.float32))


def load_localization_map(path, image_size):
    """:meth:`ViewMap.load`, refusing a map without contexts or whose images are not
    ``image_size`` (UserError naming ``path``)."""
    view_map = ViewMap.load(path)
    if len(view_map) == 0:
        raise FileFormatError(path, 'the map has no contexts')
    check_map_image_size(view_map, image_size, path)
    return view_map
