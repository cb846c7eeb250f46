"""Data-parallel training: the process group of a ``torchrun`` launch (or a single process).

Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), each process wraps the model
in ``DistributedDataParallel`` (gloo on CPU, nccl on CUDA, one GPU per process by
``LOCAL_RANK``). ``batch_size`` is per process. Every process draws the same global batch of
``batch_size * WORLD_SIZE`` episodes and trains on its own share
(:func:`dmn_localizer.training.batches.draw_step`), so the averaged gradient is the
single-process gradient of the global batch, and all processes keep identical RNG and
data-stream states: rank 0's checkpoint resumes any number of processes. Only rank 0
validates, logs and writes files; the others wait for its early-stopping decision.
"""
import logging
import os

import torch

from dmn_localizer.filter.rollout import rollout

logger = logging.getLogger(__name__)


class Distributed:
    """The process group of a torchrun launch (or a single process)."""

    def __init__(self, device):
        self.world = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.device = device
        if self.world > 1:
            import torch.distributed as dist
            if device.type == 'cuda':
                self.device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
                torch.cuda.set_device(self.device)
            # torch.distributed.nn binds the default group into its functions' defaults when
            # first imported (optimizers import it lazily through torch._dynamo): imported
            # after init_process_group it keeps the group alive past destroy_process_group,
            # and gloo's worker threads then free tensors while the interpreter shuts down,
            # which now and then aborts the process at exit
            import torch.distributed.nn  # noqa: F401
            dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
            logger.info('data-parallel: rank %d of %d (%s)', self.rank, self.world,
                        dist.get_backend())

    @property
    def main(self):
        return self.rank == 0

    def wrap(self, module, find_unused=False):
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(
            module, device_ids=[self.device] if self.device.type == 'cuda' else None,
            find_unused_parameters=find_unused)

    def broadcast_flag(self, flag):
        """Rank 0's ``flag`` on every rank."""
        if self.world == 1:
            return flag
        import torch.distributed as dist
        t = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def close(self):
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()   # leave together: a rank leaving while rank 0 still writes aborts
            dist.destroy_process_group()


class TrainStep(torch.nn.Module):
    """The model's forward for DistributedDataParallel: one rollout (its gradient hooks sync
    the DMN's parameters, which are this module's)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch, particles, fcfg, generator, kwargs):
        return rollout(self.model, batch, particles, fcfg, generator, **kwargs)
