"""Ctrl-C (SIGINT) during every long-running subcommand: exit status 130, one line
on stderr, no traceback, no temporary or half-written output left behind, and the outputs
that exist are complete. (``simulate`` is covered in test_dataset.py, ``replay`` in
test_replay.py.) Each test interrupts a real process in the middle of its work."""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from dmn_localizer.bags.simulate import simulate_bag
from dmn_localizer.data.build import build_dataset
from dmn_localizer.model import DMN, DMNConfig
from dmn_localizer.model.io import save_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp('interrupt')
    for split in ('train', 'val', 'test'):
        build_dataset('mazes', split, 2, str(root / split), image_size=16, workers=1,
                      progress=False)
    torch.manual_seed(0)
    save_model(DMN(DMNConfig(image_size=16)), root / 'tiny.safetensors')
    simulate_bag('mazes', 5, root / 'bags', image_size=16, mapping_frames=600,
                 localization_frames=4)
    return root


def leftovers(out):
    """Temporary files and directories of interrupted atomic writes under ``out``."""
    return [str(p) for p in Path(out).rglob('*') if p.name.endswith(('.tmp', '.partial'))]


class Printed:
    """A readiness condition: the process has printed ``text`` (stdout or stderr), e.g. the
    log line that starts its heavy work, so the interrupt lands in that work, not in imports."""

    def __init__(self, text):
        self.text = text


def interrupt(args, ready, name, timeout=90.0, settle=0.5):
    """Start ``dmn-localizer ARGS``, wait until ``ready()`` (or a :class:`Printed` text: it is
    mid-work), send SIGINT and check the exit: status 130 and the one-line message as the last
    line of stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = Path(tmp) / 'out', Path(tmp) / 'err'
        with open(out_path, 'w') as out_f, open(err_path, 'w') as err_f:
            proc = subprocess.Popen([sys.executable, '-m', 'dmn_localizer', *map(str, args)],
                                    cwd=REPO, stdout=out_f, stderr=err_f, text=True,
                                    env=dict(os.environ, OMP_NUM_THREADS='1',
                                             PYTHONUNBUFFERED='1'))

        def printed():
            return ready.text in out_path.read_text() + err_path.read_text()
        check = printed if isinstance(ready, Printed) else ready
        deadline = time.monotonic() + timeout
        try:
            while not check():
                assert proc.poll() is None, f'{name} ended before it was interrupted: ' + \
                    err_path.read_text()[-2000:]
                assert time.monotonic() < deadline, f'{name} never got busy'
                time.sleep(0.05)
            time.sleep(settle)
            assert proc.poll() is None, f'{name} finished before the interrupt'
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = err_path.read_text()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err[-2000:]
    assert 'Traceback' not in err, err[-2000:]
    assert lines[-1] == f'dmn-localizer {name}: interrupted', lines[-3:]


def test_simulate_bag(tmp_path):
    out = tmp_path / 'bags'
    interrupt(['simulate-bag', '--out', out, '--image-size', 32, '--mapping-frames', 20000,
               '--localization-frames', 4], lambda: bool(leftovers(out)), 'simulate-bag')
    assert not (out / 'mapping').exists() and not leftovers(out)


def test_dataset_from_bags(inputs, tmp_path):
    out = tmp_path / 'ds'
    interrupt(['dataset-from-bags', '--image-topic', '/camera/image_raw', '--pose-topic',
               '/ground_truth/pose', '--out', out, '--image-size', 16, '--contexts', 8,
               *([inputs / 'bags' / 'mapping'] * 400)], Printed('reading 400 bags'),
              'dataset-from-bags')
    assert not (out / 'manifest.json').exists() and not leftovers(out)


def test_train_keeps_a_loadable_checkpoint(inputs, tmp_path):
    from dmn_localizer.training.checkpoint import load_checkpoint
    cfg = tmp_path / 'train.yaml'
    cfg.write_text(yaml.safe_dump(dict(
        train_data=str(inputs / 'train'), val_data=str(inputs / 'val'), context_pool=6,
        contexts=[2, 3], batch_size=2, particles=4, max_steps=100000, val_every=3,
        val_episodes=4, val_batch_size=4, val_contexts=2, log_every=1,
        model={'image_size': 16}, threads=1)))
    out = tmp_path / 'run'
    state = out / 'checkpoint' / 'state.pt'
    interrupt(['train', '--config', cfg, '--out', out, '--no-progress'], state.exists, 'train',
              settle=2.0)
    assert not leftovers(out)
    model, saved = load_checkpoint(out, 'cpu')   # resumable: complete and consistent
    assert saved['step'] > 0 and model.model_id


def test_eval(inputs, tmp_path):
    out = tmp_path / 'eval.json'
    interrupt(['eval', '--model', inputs / 'tiny.safetensors', '--domain', 'mazes', '--data',
               inputs / 'test', '--episodes', 100000, '--json', out, '--plots',
               tmp_path / 'plots', '--threads', 1], Printed('evaluating dmn on'), 'eval')
    assert not out.exists() and not leftovers(tmp_path)


def test_bench(inputs, tmp_path):
    out = tmp_path / 'bench.json'
    interrupt(['bench', '--json', out, '--model', inputs / 'tiny.safetensors', '--threads', 1],
              Printed('bench:'), 'bench')   # its progress bar: the grid has started
    assert not out.exists() and not leftovers(tmp_path)


def test_demo(tmp_path):
    out = tmp_path / 'demo'
    bags = out / 'bags'
    interrupt(['demo', '--out', out, '--frames', 40],
              (bags / 'localization' / 'metadata.yaml').exists, 'demo', settle=3.0)
    assert not (out / 'metrics.json').exists() and not leftovers(out)
    for run in ('mapping', 'localization'):   # written before the interrupt: complete
        assert (bags / run / 'metadata.yaml').exists()
