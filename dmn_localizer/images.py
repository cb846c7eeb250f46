"""Camera images as numpy arrays: decoding raw and compressed frames, resizing (no ROS).

One implementation for everything that reads images: the nodes (from messages), bag reading
and replay. Unsupported or malformed input raises :class:`ImageError` with a one-line reason.
"""
import cv2
import numpy as np

# encoding -> (channels, conversion to RGB or None)
ENCODINGS = {
    'rgb8': (3, None),
    'bgr8': (3, cv2.COLOR_BGR2RGB),
    'rgba8': (4, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, cv2.COLOR_BGRA2RGB),
    'mono8': (1, cv2.COLOR_GRAY2RGB),
    '8UC3': (3, None),
}


class ImageError(ValueError):
    """An image that cannot be used (the message says why, in one line)."""


def raw_rows(encoding, height, width, step, data, bytes_per_pixel, what):
    """The (H, W * bytes_per_pixel) uint8 rows of a raw frame's ``data`` (a strided view:
    ``step`` bytes apart); ImageError naming ``what`` for an empty or truncated frame."""
    h, w, step = int(height), int(width), int(step)
    if h <= 0 or w <= 0:
        raise ImageError(f'empty {what} ({w}x{h})')
    buf = data if isinstance(data, (bytes, bytearray, memoryview, np.ndarray)) else bytes(data)
    flat = np.frombuffer(buf, np.uint8)
    row = w * bytes_per_pixel
    if step < row or flat.size < step * (h - 1) + row:
        raise ImageError(f'truncated {what} data: {flat.size} bytes for {w}x{h} {encoding} '
                         f'(step {step})')
    return np.lib.stride_tricks.as_strided(flat, shape=(h, row), strides=(step, 1))


def raw_to_rgb(encoding, height, width, step, data):
    """A raw frame (sensor_msgs/Image fields) -> (H, W, 3) uint8 RGB array (own memory)."""
    if encoding not in ENCODINGS:
        raise ImageError(f'unsupported image encoding {encoding!r} (supported: '
                         f'{", ".join(sorted(ENCODINGS))})')
    ch, conversion = ENCODINGS[encoding]
    rows = raw_rows(encoding, height, width, step, data, ch, 'image')
    h, w = rows.shape[0], int(width)
    img = rows.reshape(h, w, ch) if ch > 1 else rows.reshape(h, w)
    if conversion is not None:
        return cv2.cvtColor(np.ascontiguousarray(img), conversion)
    return img.copy()  # own, writable memory (a message buffer is read-only)


# Compressed frames declaring more pixels than this are refused before decoding: a few MB of
# PNG can declare 30000 x 30000 pixels (a 2.7 GB image, a minute of decoding).
MAX_COMPRESSED_PIXELS = 8192 * 8192


def compressed_size(data):
    """(width, height) from a PNG or JPEG header, or None (other format, or not found)."""
    if data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) >= 24:
        return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')
    if data[:2] == b'\xff\xd8':
        i = 2
        while i + 9 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            length = int.from_bytes(data[i + 2:i + 4], 'big')
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return (int.from_bytes(data[i + 7:i + 9], 'big'),
                        int.from_bytes(data[i + 5:i + 7], 'big'))
            i += 2 + length
    return None


def compressed_to_rgb(data, fmt=''):
    """A compressed frame (jpeg/png bytes) -> (H, W, 3) uint8 RGB array."""
    data = bytes(data)
    size = compressed_size(data)
    if size is not None and size[0] * size[1] > MAX_COMPRESSED_PIXELS:
        raise ImageError(f'compressed image ({fmt or "unknown format"}) declares '
                         f'{size[0]}x{size[1]} pixels: more than {MAX_COMPRESSED_PIXELS}')
    buf = np.frombuffer(data, np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise ImageError(f'compressed image ({fmt or "unknown format"}, {buf.size} bytes) '
                         'could not be decoded')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resize_square(img, size):
    """Resize an RGB image to size x size (area interpolation when shrinking)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    shrink = img.shape[0] > size or img.shape[1] > size
    return cv2.resize(np.ascontiguousarray(img), (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
