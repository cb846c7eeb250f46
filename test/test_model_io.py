"""Model files: exact round trip, no code execution, clear errors for bad files."""
import json
import pickle

import pytest
import torch

from dmn_localizer.util.errors import FileFormatError, UserError
from dmn_localizer.model import DMN, DMNConfig, load_model, save_model


def test_round_trip_exact(tmp_path):
    model = DMN(DMNConfig(attention='sigmoid'))
    mid = save_model(model, tmp_path / 'm', metadata={'steps': 3})
    loaded = load_model(tmp_path / 'm.safetensors')
    assert loaded.model_id == mid and loaded.card['metadata'] == {'steps': 3}
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    # shared trunks stay shared after loading
    assert loaded.key_trunk is loaded.query_trunk


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickle_payload_is_rejected_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_model(DMN(), tmp_path / 'm')
    (tmp_path / 'm.safetensors').write_bytes(pickle.dumps({'w': _Evil()}))
    with pytest.raises(FileFormatError, match='m.safetensors'):
        load_model(tmp_path / 'm')
    assert not (tmp_path / 'PWNED').exists()
    torch.save({'w': torch.zeros(2)}, tmp_path / 'm.safetensors')  # a torch pickle zip
    with pytest.raises(FileFormatError, match='m.safetensors'):
        load_model(tmp_path / 'm')


@pytest.mark.parametrize('damage', ['truncate', 'flip_header', 'empty', 'short_body'])
def test_corrupted_weights(tmp_path, damage):
    save_model(DMN(), tmp_path / 'm')
    f = tmp_path / 'm.safetensors'
    data = bytearray(f.read_bytes())
    if damage == 'truncate':
        data = data[:len(data) // 2]
    elif damage == 'flip_header':
        data[8:12] = b'\xff\xfe\x00]'
    elif damage == 'empty':
        data = b''
    else:
        data = data[:-4]
    f.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match='m.safetensors'):
        load_model(tmp_path / 'm')


def test_bad_cards(tmp_path):
    save_model(DMN(), tmp_path / 'm')
    card = tmp_path / 'm.json'
    good = json.loads(card.read_text())
    card.write_text('{not json')
    with pytest.raises(FileFormatError, match='m.json'):
        load_model(tmp_path / 'm')
    card.write_text(json.dumps(dict(good, version=99)))
    with pytest.raises(FileFormatError, match='version'):
        load_model(tmp_path / 'm')
    card.write_text(json.dumps(dict(good, config=dict(good['config'], image_size=64))))
    with pytest.raises(FileFormatError, match='do not match'):
        load_model(tmp_path / 'm')
    card.write_text(json.dumps(dict(good, model_id='dmn-0000')))
    with pytest.raises(FileFormatError, match='model_id'):
        load_model(tmp_path / 'm')
    with pytest.raises(UserError, match='no such file'):
        load_model(tmp_path / 'absent')
