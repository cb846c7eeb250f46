"""Data-parallel training under torchrun: 2 CPU processes (gloo) with batch 2 each
give the same weights as 1 process with batch 4 (the global batch), only rank 0 writes, and
resume works. Real processes, real collectives on localhost."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dmn_localizer.data.build import build_dataset
from dmn_localizer.model import DMN, DMNConfig, load_model
from dmn_localizer.model.io import read_card

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name('torchrun')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('ddp')
    for split in ('train', 'val'):
        build_dataset('mazes', split, 4, str(root / split), image_size=16, workers=1,
                      progress=False)
    return root


def config(root, batch_size):
    path = root / f'train_b{batch_size}.yaml'
    path.write_text(yaml.safe_dump(dict(
        train_data=str(root / 'train'), val_data=str(root / 'val'), context_pool=6,
        contexts=[2, 3], steps=1, batch_size=batch_size, particles=4, max_steps=3,
        val_every=3, val_episodes=4, val_batch_size=4, val_contexts=2, log_every=1,
        dense_weight=1.0, attention_weight=0.5, global_prob=0.5, near_truth_fraction=0.25,
        decoy_fraction=0.25, seed=3, model={'image_size': 16}, threads=1)))
    return path


def run(cmd, **kw):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run([str(c) for c in cmd], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300, **kw)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def torchrun(*args):
    return run([TORCHRUN, '--standalone', '--nproc_per_node', 2, '-m', 'dmn_localizer',
                'train', *args, '--no-progress'])


@pytest.fixture(scope='module')
def runs(data):
    two, one = data / 'two', data / 'one'
    torchrun('--config', config(data, 2), '--out', two)
    run([sys.executable, '-m', 'dmn_localizer', 'train', '--config', config(data, 4), '--out',
         one, '--no-progress'])
    return two, one


def test_two_processes_equal_one_with_the_global_batch(runs):
    two, one = runs
    a, b = load_model(two / 'final').state_dict(), load_model(one / 'final').state_dict()
    assert a.keys() == b.keys()
    va = torch.cat([a[n].flatten() for n in a])
    vb = torch.cat([b[n].flatten() for n in a])
    # float summation order differs; Adam turns a 1e-7 gradient difference on a near-zero
    # gradient into up to ~lr (3e-4) per step on that element, so: tiny overall, and at most
    # ~lr per step (3 steps) on any element (2.4e-4 measured on a 2-core AMD EPYC machine)
    assert float((va - vb).norm() / vb.norm()) < 1e-5
    assert float((va - vb).abs().max()) < 3 * 3e-4
    # training moved the weights (this is not a comparison of two copies of the init)
    torch.manual_seed(3)  # the config's seed: train() builds the model right after seeding
    init = DMN(DMNConfig(image_size=16)).state_dict()
    assert max(float((init[n] - a[n]).abs().max()) for n in a) > 5e-4  # 3 Adam steps of 3e-4


def test_only_rank_0_writes(runs):
    two, _ = runs
    with open(two / 'train_log.csv') as f:
        rows = list(csv.DictReader(f))
    assert [int(r['step']) for r in rows] == [1, 2, 3]      # one row per step, not per rank
    assert [int(r['samples']) for r in rows] == [4, 8, 12]  # the global batch
    assert (two / 'config.yaml').read_text().startswith(
        '# the resolved training config of this run (2 processes)')
    assert read_card(two / 'final')['metadata']['processes'] == 2
    names = sorted(p.name for p in two.iterdir())
    assert names == sorted(['best.json', 'best.safetensors', 'checkpoint', 'config.yaml',
                            'final.json', 'final.safetensors', 'train_log.csv',
                            'val_log.csv']), names


def test_resume_under_torchrun(runs):
    two, _ = runs
    torchrun('--config', config(two.parent, 2), '--out', two, '--resume', '--max-steps', 5)
    with open(two / 'train_log.csv') as f:
        assert [int(r['step']) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]
    state = torch.load(two / 'checkpoint' / 'state.pt', weights_only=True)
    assert state['step'] == 5


GROUP_FREED = '''
import os, sys
from dmn_localizer.training.config import load_train_config
from dmn_localizer.training.train import train
train(load_train_config(sys.argv[1], {}), sys.argv[2] + os.environ['RANK'], progress=False)
threads = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]
with open(sys.argv[2] + os.environ['RANK'] + '.threads', 'w') as f:
    f.write(str(sum(t.startswith(('gloo', 'pt_gloo')) for t in threads)))
'''


@pytest.mark.skipif(not Path('/proc/self/task').is_dir(), reason='reads /proc (Linux)')
def test_the_process_group_is_freed_before_exit(data, tmp_path):
    # gloo worker threads still running when the interpreter shuts down free tensors without
    # the GIL and abort the process now and then: the group must be gone when train() returns
    script = tmp_path / 'train_and_count.py'
    script.write_text(GROUP_FREED)
    run([TORCHRUN, '--standalone', '--nproc_per_node', 2, script, config(data, 2),
         tmp_path / 'out'])
    left = [(tmp_path / f'out{rank}.threads').read_text() for rank in (0, 1)]
    assert left == ['0', '0'], f'gloo threads left per rank: {left}'
