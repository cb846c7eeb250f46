"""Checkpoints of a training run and exact resume, and the warm start from a model.

``checkpoint/state.pt`` holds everything resume needs: the weights, the optimizer, the RNG
states, the step, the best validation loss and the data position (plain tensors and dicts,
loaded with ``weights_only=True``); ``checkpoint/model`` (safetensors + card) holds the same
weights for eval and inspection.
"""
import io
import json
import logging

import torch

from dmn_localizer.model.baselines import build_model
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.io import (atomic_write_bytes, load_model, save_model,
                                    state_to_safetensors_bytes, weights_id)
from dmn_localizer.training.config import TrainConfig
from dmn_localizer.util.errors import FileFormatError, UserError

logger = logging.getLogger(__name__)

STATE_VERSION = 2  # 2: weights inside state.pt


def save_checkpoint(out, model, opt, step, best, bad, rng, gen, stream, cfg):
    """One atomic file, ``checkpoint/state.pt``, holds everything resume needs (weights
    included), so an interrupt at any moment leaves a consistent checkpoint. The weights are
    then also saved as ``checkpoint/model`` (safetensors + card) for eval and inspection."""
    ck = out / 'checkpoint'
    state = {'version': STATE_VERSION, 'step': step, 'best': best,
             'bad_validations': bad, 'optimizer': opt.state_dict(),
             'model_config': json.dumps(model.config.to_dict()),
             'model_state': {k: v.detach().cpu().clone() for k, v in
                             model.state_dict().items()},
             'torch_rng': gen.get_state(),
             'numpy_rng': json.dumps(rng.bit_generator.state),
             'stream': json.dumps(stream.state()), 'config': json.dumps(cfg.to_dict())}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(ck / 'state.pt', buf.getvalue())
    save_model(model, ck / 'model', metadata={'step': step})


def load_checkpoint(out, device):
    """The model and the state dict of ``out/checkpoint/state.pt``."""
    ck = out / 'checkpoint'
    path = ck / 'state.pt'
    if not path.exists():
        raise UserError(f'{path}: no checkpoint to resume from')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # corrupted zip, forbidden pickle globals ...
        raise FileFormatError(path, f'not a readable checkpoint ({type(exc).__name__})') \
            from None
    if not isinstance(state, dict) or state.get('version') != STATE_VERSION:
        raise FileFormatError(path, 'unsupported checkpoint version')
    try:
        model = build_model(DMNConfig.from_dict(json.loads(state['model_config'])))
        model.load_state_dict(state['model_state'], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise FileFormatError(path, f'bad model in checkpoint ({str(exc).splitlines()[0]})') \
            from None
    model.model_id = weights_id(state_to_safetensors_bytes(model.state_dict()))
    return model.to(device), state


def warm_start(model, path, device):
    """Copy the weights of the model at ``path`` into ``model`` (same architecture)."""
    source = load_model(path, device=device)
    if source.config != model.config:
        raise UserError(f'{path}: init_from model config differs from the training config\'s '
                        f'model ({source.config} != {model.config})')
    model.load_state_dict(source.state_dict())
    logger.info('warm start from %s (%s)', path, source.model_id)


def start(cfg: TrainConfig, out, device, resume, rng, gen, stream):
    """The model (in training mode), its optimizer, the step, the best validation loss and
    the count of validations without improvement: fresh (warm-started from ``init_from`` if
    given), or with ``resume`` restored from ``out/checkpoint`` together with ``rng``,
    ``gen`` and ``stream``."""
    if resume:
        model, state = load_checkpoint(out, device)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        opt.load_state_dict(state['optimizer'])
        step, best, bad = int(state['step']), float(state['best']), int(state['bad_validations'])
        rng.bit_generator.state = json.loads(state['numpy_rng'])
        gen.set_state(state['torch_rng'])
        stream.restore(json.loads(state['stream']))
        logger.info('resumed from step %d (best val %.5f)', step, best)
        return model, opt, step, best, bad
    model = build_model(cfg.model_config()).to(device).train()
    if cfg.init_from:
        warm_start(model, cfg.init_from, device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return model, opt, 0, float('inf'), 0
