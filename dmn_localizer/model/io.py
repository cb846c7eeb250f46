"""Model files: weights as safetensors beside a JSON card (config, version, model id). No pickle.

A model ``NAME`` is two files: ``NAME.safetensors`` (tensors only, parsed without running any
code) and ``NAME.json``::

    {"format": "dmn_localizer.model", "version": 1, "model_id": "dmn-<sha256[:16]>",
     "config": {...DMNConfig...}, "metadata": {...free-form: data, steps, metrics...}}

``config.architecture`` says which network the weights are (the DMN or a baseline of
:mod:`dmn_localizer.model.baselines`; cards without it are DMNs); an unknown one is a
FileFormatError naming the card.

``model_id`` is derived from the weight bytes, so a card paired with other weights is detected.
Every problem reading either file raises :class:`~dmn_localizer.util.errors.FileFormatError` naming
the file. Writes are atomic (temp file + fsync + ``os.replace``).
"""
import hashlib
import json
import logging
from pathlib import Path

from dmn_localizer.util.errors import FileFormatError, UserError
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.model.baselines import build_model
from dmn_localizer.util.atomic import write_bytes as atomic_write_bytes
from dmn_localizer.util.atomic import write_json as atomic_write_json
from dmn_localizer.util.safetensors_file import read_header

logger = logging.getLogger(__name__)

FORMAT = 'dmn_localizer.model'
LOCALIZER_ARCHITECTURES = ('dmn', 'aligned')
"""The observation models the localizer, the mapper and replay run: a particle log-likelihood
over a map of contexts, with the nearest-context path (``log_likelihood_selected``)."""
VERSION = 1


def model_paths(path):
    """``(weights, card)`` paths for ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    path = Path(path)
    if path.suffix in ('.safetensors', '.json'):
        path = path.with_suffix('')
    return path.with_suffix('.safetensors'), path.with_suffix('.json')


def state_to_safetensors_bytes(state):
    """Serialise a ``{name: tensor}`` dict (copies break shared storage)."""
    from safetensors.torch import save
    return save({k: v.detach().to('cpu').contiguous().clone() for k, v in state.items()})


def read_safetensors(path):
    """Parse a safetensors file into ``{name: tensor}`` (CPU), validating it first.

    Never runs code from the file. Raises FileFormatError naming the file on any problem.
    """
    from safetensors.torch import load
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f'{path}: no such file') from None
    except OSError as exc:
        raise FileFormatError(path, f'cannot read: {exc.strerror}') from None
    read_header(path, data)
    try:
        return load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise FileFormatError(path, f'corrupted safetensors data ({exc})') from None


def weights_id(blob):
    """The model id of serialised weights (safetensors bytes)."""
    return 'dmn-' + hashlib.sha256(blob).hexdigest()[:16]


def save_model(model, path, metadata=None):
    """Write ``NAME.safetensors`` and ``NAME.json`` for ``model``; returns the model id."""
    weights_path, card_path = model_paths(path)
    blob = state_to_safetensors_bytes(model.state_dict())
    model_id = weights_id(blob)
    atomic_write_bytes(weights_path, blob)
    atomic_write_json(card_path, {'format': FORMAT, 'version': VERSION, 'model_id': model_id,
                                  'config': model.config.to_dict(),
                                  'metadata': metadata or {}})
    logger.info('saved model %s to %s', model_id, weights_path)
    return model_id


def read_card(path):
    """The JSON card of a model (validated)."""
    _, card_path = model_paths(path)
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise UserError(f'{card_path}: no such file (a model is NAME.safetensors + '
                        'NAME.json)') from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(card_path, f'not a valid JSON model card ({exc})') from None
    if not isinstance(card, dict) or card.get('format') != FORMAT:
        raise FileFormatError(card_path, f'not a {FORMAT} card')
    if card.get('version') != VERSION:
        raise FileFormatError(card_path, f'unsupported version {card.get("version")!r} '
                              f'(expected {VERSION})')
    return card


def update_card_metadata(path, **values):
    """Set ``values`` in the ``metadata`` of a saved model's card (written atomically; the
    weights and their model id are unchanged); returns the card."""
    _, card_path = model_paths(path)
    card = read_card(path)
    card['metadata'] = dict(card.get('metadata') or {}, **values)
    atomic_write_json(card_path, card)
    return card


def load_model(path, device='cpu', architecture=None):
    """Load a model saved by :func:`save_model`; returns the network of its card's
    ``architecture`` (a :class:`~dmn_localizer.model.dmn.DMN` or a baseline) in eval mode.
    With ``architecture`` given, a model of another one is a UserError naming the file.

    ``architecture`` may also be a tuple of accepted ones (e.g. :data:`LOCALIZER_ARCHITECTURES`).

    ``model.model_id`` and ``model.card`` carry the card. Raises FileFormatError (naming the
    file) for truncated, corrupted, mismatched or foreign files.
    """
    weights_path, card_path = model_paths(path)
    card = read_card(path)
    try:
        config = DMNConfig.from_dict(card['config'])
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(card_path, f'bad config ({exc})') from None
    accepted = (architecture,) if isinstance(architecture, str) else architecture
    if accepted is not None and config.architecture not in accepted:
        raise UserError(f'{card_path}: a {config.architecture} model, '
                        f'{" or ".join(accepted)} needed')
    state = read_safetensors(weights_path)
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else 'mismatch'
        raise FileFormatError(weights_path, f'weights do not match the config ({first})') \
            from None
    blob_id = weights_id(weights_path.read_bytes())
    if card.get('model_id') not in (None, blob_id):
        raise FileFormatError(card_path, f'model_id {card.get("model_id")} does not match '
                              f'the weights ({blob_id})')
    model.model_id = card.get('model_id', blob_id)
    model.card = card
    return model.to(device).eval()
