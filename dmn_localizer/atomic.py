"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Write to a temporary file in the destination's directory, fsync it, ``os.replace`` it over the
destination and fsync the directory. A process killed at any point leaves either the old file
or the new one.
"""
import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_text(path, text):
    write_bytes(path, text.encode())


def write_json(path, obj, indent=2):
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + '\n')


def remove_temp_files(directory, prefix=''):
    """Remove the temporary files that interrupted atomic writes left in ``directory``."""
    for name in os.listdir(directory):
        if name.startswith(f'.{prefix}') and name.endswith('.tmp'):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
