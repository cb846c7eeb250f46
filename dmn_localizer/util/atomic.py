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
        _fsync_dir(path.parent)
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a temporary directory path (not yet created) with the same name as ``path``,
    inside a hidden folder beside it; on success it is renamed to ``path`` (which must not
    exist), on failure removed: an interrupted writer of a multi-file output (a rosbag2 bag)
    leaves nothing at ``path``. Writers that name their files after the directory (rosbag2:
    ``NAME/NAME_0.mcap``, referenced by ``metadata.yaml``) see the final name."""
    import shutil
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = path.parent / f'.{path.name}.{os.getpid()}.partial'
    shutil.rmtree(holder, ignore_errors=True)
    holder.mkdir()
    tmp = holder / path.name
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(root, name), 'rb+') as f:
                    os.fsync(f.fileno())
        os.rename(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def _fsync_dir(directory):
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
