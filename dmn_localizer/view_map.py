"""The view-embedding map: a set of (context image, planar viewpoint) pairs, plus a file format.

Paper Section IV: the map m = <V_i, s_i> holds one view embedding per context and its
viewpoint. The file stores the context *images* and poses (embeddings are recomputed with
whatever model loads the map, so one map serves every model) and, optionally, the embeddings
of the model named by ``model_id`` for a fast start.

File format (``.dmnmap``, a safetensors file; loading never executes code):
  tensors  ``poses`` float64 (N, 3) map-frame (x, y, yaw); ``images`` uint8 (N, H, W, 3) RGB;
           optionally ``embeddings`` float32 (N, ...) from the model ``model_id``.
  metadata ``format`` = 'dmn_localizer.map', ``version`` = '1', ``frame_id``, ``model_id``.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dmn_localizer.atomic import atomic_path
from dmn_localizer.errors import FileFormatError

FORMAT = 'dmn_localizer.map'
VERSION = 1


@dataclass
class ViewMap:
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 32, 32, 3), np.uint8))
    poses: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float64))
    frame_id: str = 'map'
    model_id: str = ''
    embeddings: np.ndarray | None = None  # (N, ...) float32 of model_id, optional

    def __len__(self):
        return len(self.poses)

    def add(self, image, pose, embedding=None):
        """Append one context: image (H, W, 3) uint8 at the map's image size, pose (3,) and
        optionally its view embedding (by the model ``model_id``; kept only while every
        context has one)."""
        image = np.asarray(image, np.uint8)
        if len(self) and image.shape != self.images.shape[1:]:
            raise ValueError(f'context image shape {image.shape} != map {self.images.shape[1:]}')
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
        self.embeddings = None

    def save(self, path):
        """Write the map atomically (temp file + fsync + rename)."""
        from safetensors.numpy import save_file
        tensors = {'poses': np.ascontiguousarray(self.poses, np.float64),
                   'images': np.ascontiguousarray(self.images, np.uint8)}
        if self.embeddings is not None:
            tensors['embeddings'] = np.ascontiguousarray(self.embeddings, np.float32)
        meta = {'format': FORMAT, 'version': str(VERSION), 'frame_id': self.frame_id,
                'model_id': self.model_id}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path):
        """Read a map file; any problem raises FileFormatError naming the file."""
        from safetensors import SafetensorError, safe_open
        path = Path(path)
        if not path.is_file():
            raise FileFormatError(path, 'no such map file')
        try:
            with safe_open(str(path), framework='numpy') as f:
                meta = f.metadata() or {}
                if meta.get('format') != FORMAT:
                    raise FileFormatError(path, f"not a dmn_localizer map (format "
                                                f"{meta.get('format')!r})")
                if meta.get('version') != str(VERSION):
                    raise FileFormatError(path, f"map version {meta.get('version')!r} is not "
                                                f'supported (this build reads {VERSION})')
                keys = set(f.keys())
                if not {'poses', 'images'} <= keys:
                    raise FileFormatError(path, 'map lacks poses or images')
                poses, images = f.get_tensor('poses'), f.get_tensor('images')
                emb = f.get_tensor('embeddings') if 'embeddings' in keys else None
        except (SafetensorError, OSError, ValueError) as exc:
            raise FileFormatError(path, f'unreadable map file ({exc})') from None
        if poses.ndim != 2 or poses.shape[1] != 3 or images.ndim != 4 \
                or images.shape[0] != poses.shape[0] or images.shape[3] != 3 \
                or images.dtype != np.uint8 or not np.isfinite(poses).all() \
                or (emb is not None and emb.shape[:1] != poses.shape[:1]):
            raise FileFormatError(path, f'inconsistent map contents: poses {poses.shape}, '
                                        f'images {images.shape} {images.dtype}')
        return cls(images=images, poses=poses.astype(np.float64),
                   frame_id=meta.get('frame_id', 'map'), model_id=meta.get('model_id', ''),
                   embeddings=emb)
