"""The node-latency probe of `dmn-localizer bench --node-latency` times real poses coming back
from a real localizer node process (values are not checked: timing is never a test)."""
import torch

from conftest import ros_test_env

from dmn_localizer.model import DMN, DMNConfig, save_model
from dmn_localizer.nodes.tools.latency_probe import measure


def test_latency_probe_gets_poses_back(tmp_path):
    torch.manual_seed(0)
    model = tmp_path / 'tiny.safetensors'
    save_model(DMN(DMNConfig()), model)
    row = measure(model, particles=16, frames=3, warmup=1, rate_hz=20.0, contexts=4,
                  domain_id=int(ros_test_env()['ROS_DOMAIN_ID']))
    assert row['path'] == 'node' and row['K'] == 16 and row['Nc'] == 4
    assert row['received'] == row['frames'] == 3
    assert 0 < row['p50_ms'] <= row['p95_ms'] <= row['max_ms']
