"""The torch device a command, node or training run works on, chosen once.

``'auto'`` is CUDA when torch sees a CUDA device, else the CPU; ``'cpu'``, ``'cuda'`` and
``'cuda:N'`` are taken as asked, and refused with a ``ValueError`` (which the commands and
nodes turn into a user error) when the name is anything else or the GPU is not there.
"""

import torch


def select_device(name):
    """'auto' -> cuda when available else cpu; 'cpu', 'cuda', 'cuda:N' as asked (ValueError
    if the name is unknown or the device absent). Returns a ``torch.device``."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    kind, colon, index = str(name).partition(':')
    if not (name in ('cpu', 'cuda') or (kind == 'cuda' and colon and index.isdigit())):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {name!r}")
    if kind == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'device {name} requested but torch sees no CUDA device')
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f'device {name} requested but torch sees '
                         f'{torch.cuda.device_count()} CUDA device(s)')
    return torch.device(name)


def set_cpu_threads(threads):
    """Give torch ``threads`` CPU threads for this process (0: leave torch's default)."""
    if int(threads) > 0:
        torch.set_num_threads(int(threads))
