"""Image decoding: every supported encoding round-trips exactly; bad frames raise ImageError
with a one-line reason (the nodes skip them with a warning)."""
import cv2
import numpy as np
import pytest

from dmn_localizer.images import ImageError, compressed_to_rgb, raw_to_rgb, resize_square

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize('encoding,frame', [
    ('rgb8', RGB), ('bgr8', RGB[..., ::-1]),
    ('rgba8', np.dstack([RGB, np.full((5, 7), 9, np.uint8)])),
    ('bgra8', np.dstack([RGB[..., ::-1], np.full((5, 7), 9, np.uint8)]))])
def test_color_encodings_round_trip(encoding, frame):
    ch = frame.shape[2]
    padded = np.zeros((5, 7 * ch + 3), np.uint8)  # rows padded: step > width * channels
    padded[:, :7 * ch] = frame.reshape(5, -1)
    out = raw_to_rgb(encoding, 5, 7, 7 * ch + 3, padded.tobytes())
    np.testing.assert_array_equal(out, RGB)
    out[0, 0, 0] = 1  # own, writable memory


def test_mono8_becomes_grey_rgb():
    grey = RGB[..., 0]
    out = raw_to_rgb('mono8', 5, 7, 7, grey.tobytes())
    assert out.shape == (5, 7, 3) and (out == grey[..., None]).all()


@pytest.mark.parametrize('args,reason', [
    (('32FC1', 5, 7, 28, bytes(140)), 'unsupported image encoding'),
    (('bayer_rggb8', 5, 7, 7, bytes(35)), 'unsupported image encoding'),
    (('rgb8', 5, 7, 21, bytes(50)), 'truncated'),
    (('rgb8', 5, 7, 10, bytes(200)), 'truncated'),  # step shorter than a row
    (('rgb8', 0, 7, 21, b''), 'empty'),
])
def test_bad_frames_raise_one_line(args, reason):
    with pytest.raises(ImageError, match=reason) as exc:
        raw_to_rgb(*args)
    assert '\n' not in str(exc.value)


def test_compressed_round_trip_and_garbage():
    ok, png = cv2.imencode('.png', RGB[..., ::-1])
    np.testing.assert_array_equal(compressed_to_rgb(png.tobytes(), 'png'), RGB)
    with pytest.raises(ImageError, match='could not be decoded'):
        compressed_to_rgb(b'\x89PNG garbage', 'png')
    with pytest.raises(ImageError):
        compressed_to_rgb(b'', 'jpeg')


def test_resize_any_size():
    assert resize_square(RGB, 32).shape == (32, 32, 3)
    big = np.zeros((480, 640, 3), np.uint8)
    assert resize_square(big, 32).shape == (32, 32, 3)
