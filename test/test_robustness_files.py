"""Map files: every kind of damage is one FileFormatError naming the file and the
problem; loading never runs code; a process SIGKILLed while saving leaves the previous map
intact and loadable. (Model files: test_model_io.py.)"""
import json
import pickle
import random
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from conftest import REPO
from dmn_localizer.util.errors import FileFormatError
from dmn_localizer.mapping.view_map import FORMAT, ViewMap, tensors_digest
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.dmn import DMN
from dmn_localizer.model.io import save_model


def small_map(n=5, seed=0):
    rng = np.random.default_rng(seed)
    vm = ViewMap(model_id='dmn-x')
    for i in range(n):
        vm.add(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), [i, 2.0 * i, 0.1 * i],
               rng.normal(size=(4, 2, 2)).astype(np.float32))
    return vm


def header_length(data):
    return 8 + struct.unpack('<Q', data[:8])[0]


def write_raw(path, tensors, **meta):
    meta = {'format': FORMAT, 'version': '1', 'frame_id': 'map', 'model_id': '', **meta}
    save_file(tensors, str(path), metadata=meta)


class Payload:
    """Unpickling this would create the file named in ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def damage(kind, path, tmp_path):
    """Write a damaged map of ``kind`` to ``path``; returns the expected problem text."""
    good = tmp_path / 'good.dmnmap'
    small_map().save(good)
    data = good.read_bytes()
    hl = header_length(data)
    if kind == 'empty':
        path.write_bytes(b'')
        return 'truncated or not a map file (0 bytes)'
    if kind == 'truncated-header':
        path.write_bytes(data[:hl - 10])
        return 'truncated (bad header length)'
    if kind == 'truncated-data':
        path.write_bytes(data[:hl + (len(data) - hl) // 2])
        return 'truncated: tensor'
    if kind == 'truncated-last-byte':
        path.write_bytes(data[:-1])
        return 'truncated: tensor'
    if kind == 'corrupted-data':
        b = bytearray(data)
        b[-100] ^= 0xFF  # one bit-flipped byte in the tensor data
        path.write_bytes(bytes(b))
        return 'corrupted: the contents do not match the checksum'
    if kind == 'corrupted-header':
        b = bytearray(data)
        b[9] = ord('#')
        path.write_bytes(bytes(b))
        return 'header is not JSON'
    if kind == 'random-bytes':
        path.write_bytes(np.random.default_rng(0).bytes(5000))
        return 'bad header length'
    if kind == 'text':
        path.write_text('poses: [[0, 0, 0]]\n' * 10)
        return 'bad header length'
    if kind == 'pickle':
        path.write_bytes(pickle.dumps(Payload(str(tmp_path / 'PWNED'))))
        return 'bad header length'
    if kind == 'torch-pickle':
        torch.save({'poses': torch.zeros(2, 3), 'x': Payload(str(tmp_path / 'PWNED'))}, path)
        return 'bad header length'
    if kind == 'wrong-version':
        vm = small_map()
        write_raw(path, {'poses': vm.poses, 'images': vm.images}, version='2')
        return "map version '2' is not supported (this build reads 1)"
    if kind == 'model-file':
        torch.manual_seed(0)
        save_model(DMN(DMNConfig()), tmp_path / 'model.safetensors')
        path.write_bytes((tmp_path / 'model.safetensors').read_bytes())
        return "not a dmn_localizer map (format None)"
    if kind == 'missing-images':
        write_raw(path, {'poses': np.zeros((2, 3))})
        return 'map lacks poses or images'
    if kind == 'nan-poses':
        tensors = {'poses': np.full((2, 3), np.nan), 'images': np.zeros((2, 32, 32, 3), np.uint8)}
        write_raw(path, tensors, sha256=tensors_digest(tensors))
        return 'inconsistent map contents'
    if kind == 'wrong-shapes':
        write_raw(path, {'poses': np.zeros((2, 3)), 'images': np.zeros((3, 32, 32, 3),
                                                                       np.uint8)})
        return 'inconsistent map contents'
    if kind == 'bad-offsets':
        header = json.loads(data[8:hl])
        header['images']['data_offsets'][1] += 1
        h = json.dumps(header).encode()
        path.write_bytes(struct.pack('<Q', len(h)) + h + data[hl:] + b'\0')
        return "corrupted header entry for 'images'"
    if kind == 'string-offsets':
        header = json.loads(data[8:hl])
        header['images']['data_offsets'] = [str(v) for v in header['images']['data_offsets']]
        h = json.dumps(header).encode()
        path.write_bytes(struct.pack('<Q', len(h)) + h + data[hl:])
        return "corrupted header entry for 'images'"
    if kind == 'missing':
        return 'no such map file'
    raise AssertionError(kind)


KINDS = ['empty', 'truncated-header', 'truncated-data', 'truncated-last-byte', 'corrupted-data',
         'corrupted-header', 'random-bytes', 'text', 'pickle', 'torch-pickle', 'wrong-version',
         'model-file', 'missing-images', 'nan-poses', 'wrong-shapes', 'bad-offsets',
         'string-offsets', 'missing']


@pytest.mark.parametrize('kind', KINDS)
def test_damaged_map_is_one_clear_error(kind, tmp_path):
    path = tmp_path / f'{kind}.dmnmap'
    problem = damage(kind, path, tmp_path)
    with pytest.raises(FileFormatError) as info:
        ViewMap.load(path)
    message = str(info.value)
    assert message.startswith(f'{path}: ') and problem in message, message
    assert '\n' not in message and info.value.path == path
    assert not (tmp_path / 'PWNED').exists()  # loading never executes code


def test_round_trip_with_checksum(tmp_path):
    vm = small_map()
    vm.save(tmp_path / 'm.dmnmap')
    back = ViewMap.load(tmp_path / 'm.dmnmap')
    np.testing.assert_array_equal(back.images, vm.images)
    np.testing.assert_array_equal(back.poses, vm.poses)
    np.testing.assert_array_equal(back.embeddings, vm.embeddings)
    assert back.model_id == 'dmn-x'
    # a version-1 file written before the checksum existed still loads
    write_raw(tmp_path / 'old.dmnmap', {'poses': vm.poses, 'images': vm.images})
    assert len(ViewMap.load(tmp_path / 'old.dmnmap')) == 5


SAVER = '''
import sys
import numpy as np
from dmn_localizer.mapping.view_map import ViewMap
path, n, gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
images = np.random.default_rng(gen).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
while True:
    gen += 1
    vm = ViewMap(images=images, poses=np.full((n, 3), float(gen)), frame_id=f'gen{gen}')
    print('begin', gen, flush=True)
    vm.save(path)
    print('end', gen, flush=True)
'''


def test_sigkill_during_save_keeps_the_previous_map(tmp_path):
    """A real process saves a 12 MB map in a loop and is SIGKILLed at random moments: the map
    file always loads and is the last completed save (or the one whose rename had happened);
    meanwhile this process keeps loading the file: never half written."""
    path = tmp_path / 'map.dmnmap'
    n = 4000
    ViewMap(images=np.zeros((n, 32, 32, 3), np.uint8), poses=np.zeros((n, 3)),
            frame_id='gen0').save(path)
    gen, mid_save, reads, rounds = 0, 0, 0, 6
    rnd = random.Random(0)
    for _ in range(rounds):
        proc = subprocess.Popen([sys.executable, '-c', SAVER, str(path), str(n), str(gen)],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + rnd.uniform(0.6, 1.4)
        while time.monotonic() < deadline:  # readers never see a half-written file either
            vm = ViewMap.load(path)
            assert (vm.poses == int(vm.frame_id[3:])).all()
            reads += 1
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        # a line the kill cut short is not an event
        events = [e for e in (line.split() for line in out.splitlines()) if len(e) == 2]
        ended = [int(g) for e, g in events if e == 'end']
        begun = [int(g) for e, g in events if e == 'begin']
        last_end = ended[-1] if ended else gen
        if begun and (not ended or begun[-1] > ended[-1]):
            mid_save += 1
        vm = ViewMap.load(path)  # never half written
        loaded = int(vm.frame_id[3:])
        assert loaded in (last_end, last_end + 1), (loaded, events[-3:])
        assert (vm.poses == loaded).all() and len(vm) == n
        gen = loaded
    assert gen > 0 and mid_save >= rounds // 2, (gen, mid_save)  # the kills hit saves
