"""Training the DMN end to end through the particle filter (losses, curriculum, checkpoints).

``train(TrainConfig, out_dir, resume=False)`` is the importable entry point behind
``dmn-localizer train``.
"""
from dmn_localizer.training.config import load_train_config, TrainConfig
from dmn_localizer.training.train import train, validate

__all__ = ['load_train_config', 'train', 'TrainConfig', 'validate']
