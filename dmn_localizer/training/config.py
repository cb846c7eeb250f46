"""Training configuration (one commented dataclass, loaded from YAML)."""
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dmn_localizer.config import strict_from_dict
from dmn_localizer.util.errors import FileFormatError, UserError
from dmn_localizer.model.config import DMNConfig, LATENT_MAPS

BELIEFS = ('tracking', 'global')


@dataclass
class TrainConfig:
    # --- data: dataset folders written by `dmn-localizer simulate` or `dataset-from-bags`
    # (relative to the cwd); a list of folders trains (validates) on all of them
    train_data: str = 'data/mazes/train'
    val_data: str = 'data/mazes/val'
    # contexts requested per episode from the dataset; each batch picks N of them
    context_pool: int = 16
    # N contexts per batch, drawn uniformly from [lo, hi] (one N per batch)
    contexts: tuple = (4, 16)
    # query steps T per training sequence (paper: 1, one-step tracking)
    steps: int = 1
    # --- model and optimisation
    # DMNConfig fields; `architecture` picks the DMN or a baseline (latent_image,
    # latent_vector: no attention loss; regression: the pose loss only, no particle filter)
    model: dict = field(default_factory=dict)
    # warm start: a model folder/file to load weights from (its config must equal `model`);
    # null trains from scratch. The optimizer, schedule and data stream start fresh.
    init_from: str = None
    seed: int = 0
    batch_size: int = 16
    particles: int = 32                          # K
    lr: float = 3e-4
    weight_decay: float = 0.0
    grad_clip: float = 10.0                      # global norm; 0 disables
    max_steps: int = 100000
    threads: int = 2                             # torch CPU threads
    device: str = 'auto'                         # 'auto' | 'cpu' | 'cuda' | 'cuda:1' ...
    # --- loss (mean over batch and steps):
    #     w_mse * [(dx^2 + dy^2)/L^2 + yaw_weight * dyaw^2] on the weighted mean (paper)
    #     + w_dense * cross-entropy(normalised particle weights, kernel of distance to truth)
    mse_weight: float = 1.0
    yaw_weight: float = 0.5
    dense_weight: float = 0.0
    dense_kernel_m: float = 3.0
    dense_kernel_deg: float = 30.0
    #     + w_attention * cross-entropy(attention at the true pose, kernel of each context's
    #       pose distance to the truth): trains the encoders to pick overlapping views
    attention_weight: float = 0.0
    attention_kernel_m: float = 4.0
    attention_kernel_deg: float = 45.0
    #     + w_pose_contrast * pose-contrast loss (our addition; filter/rollout.py
    #       pose_contrast_loss): per context, cross-entropy of its attention logits over
    #       pose_contrast_poses candidate poses (the truth and Gaussian offsets of
    #       pose_contrast_offset_std m, deg) against a kernel (pose_contrast_kernel m, deg),
    #       contexts weighted by the attention kernel of their distance to the truth: trains
    #       the view keys to depend on where the particle is relative to the view
    pose_contrast_weight: float = 0.0
    pose_contrast_poses: int = 16
    pose_contrast_offset_std: tuple = (2.0, 20.0)
    pose_contrast_kernel: tuple = (0.75, 10.0)
    # --- initial belief: 'tracking' Gaussian around the first true pose, with probability
    # global_prob a uniform 'global' belief instead. Gaussian std (m, deg) moves linearly from
    # init_std_start to init_std_end over curriculum_steps.
    global_prob: float = 0.0
    # apply the paper's MSE to global-belief episodes too (with K = 32 uniform particles the
    # weighted mean is a noisy, large target; by default only the dense/attention losses
    # train on them)
    mse_on_global: bool = False
    # perturb the tracking belief's mean by the same std (PF-net; see initial_particles)
    perturb_belief_mean: bool = True
    init_std_start: tuple = (6.0, 30.0)
    init_std_end: tuple = (6.0, 30.0)
    curriculum_steps: int = 1
    # share of particles replaced by near-truth samples (std near_truth_std m, deg)
    near_truth_fraction: float = 0.0
    near_truth_std: tuple = (1.5, 15.0)
    # share of particles that are decoys: the true pose's offset from its nearest context,
    # re-anchored at other contexts (+ decoy_std noise, m and deg). Geometry alone cannot tell
    # them from the truth, so they can only be down-weighted by comparing images (our
    # addition against the pose-prior trap of TRAINING_NOTES.md)
    decoy_fraction: float = 0.0
    decoy_std: tuple = (0.5, 5.0)
    # probability that the context nearest to the first query is forced into the batch's
    # contexts, moving linearly from start to end over curriculum_steps
    near_context_prob_start: float = 0.0
    near_context_prob_end: float = 0.0
    # --- filter during training: transition noise (m, m, deg), soft resampling alpha
    transition_std: tuple = (0.5, 0.5, 5.0)
    soft_alpha: float = 0.5
    # --- validation / checkpoints / logging
    val_every: int = 500                         # steps between validations (and checkpoints)
    val_episodes: int = 128
    val_batch_size: int = 16
    val_contexts: int = 4
    val_init_std: tuple = (6.0, 30.0)            # paper protocol: one-step tracking
    patience: int = 20                           # validations without improvement -> stop
    max_minutes: float = 0.0                     # stop after this much training (0: no limit);
    #                                              a validation and checkpoint end the run
    log_every: int = 50

    def __post_init__(self):
        self.contexts = tuple(int(c) for c in self.contexts)
        for name in ('init_std_start', 'init_std_end', 'near_truth_std', 'transition_std',
                     'val_init_std', 'decoy_std', 'pose_contrast_offset_std',
                     'pose_contrast_kernel'):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))
        lo, hi = self.contexts
        if not 1 <= lo <= hi <= self.context_pool:
            raise ValueError(f'contexts must satisfy 1 <= lo <= hi <= context_pool '
                             f'({self.context_pool}), got {self.contexts}')
        if self.val_contexts > self.context_pool:
            raise ValueError('val_contexts must be <= context_pool')
        if self.steps < 1 or self.particles < 1 or self.batch_size < 1:
            raise ValueError('steps, particles and batch_size must be >= 1')
        if self.near_truth_fraction + self.decoy_fraction > 1.0:
            raise ValueError('near_truth_fraction + decoy_fraction must be <= 1')
        for name in ('global_prob', 'near_truth_fraction', 'decoy_fraction',
                     'near_context_prob_start',
                     'near_context_prob_end', 'soft_alpha'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{name} must be in [0, 1]')
        if self.pose_contrast_weight and self.pose_contrast_poses < 2:
            raise ValueError('pose_contrast_poses must be >= 2')
        architecture = self.model_config().architecture  # validates the model options
        for name in ('attention_weight', 'pose_contrast_weight'):
            if architecture in LATENT_MAPS and getattr(self, name):
                raise ValueError(f'{name}: a {architecture} model has no attention '
                                 '(set it to 0)')
        if architecture == 'regression' and (self.dense_weight or self.attention_weight
                                             or self.pose_contrast_weight):
            raise ValueError('dense_weight, attention_weight, pose_contrast_weight: a '
                             'regression model has no particles; it trains on the pose loss '
                             'only (set them to 0)')

    def model_config(self):
        return DMNConfig.from_dict(self.model)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return strict_from_dict(cls, d, 'training config')


def _merged(base, over):
    """``over`` on top of ``base``; mappings (e.g. ``model``) merge key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = _merged(out[key], value)
        out[key] = value
    return out


def _read_yaml_chain(path, seen=()):
    """The options of a YAML config, with ``base: OTHER.yaml`` (relative to its folder)
    read first and these options on top of it."""
    import yaml
    if path.resolve() in seen:
        raise FileFormatError(path, 'base configs form a cycle')
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UserError(f'{path}: no such file') from None
    except (OSError, yaml.YAMLError) as exc:
        raise FileFormatError(path, f'not a valid YAML file ({exc})') from None
    if not isinstance(raw, dict):
        raise FileFormatError(path, 'expected a mapping of training options')
    base = raw.pop('base', None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise FileFormatError(path, 'base must be the path of another training config')
    return _merged(_read_yaml_chain(path.parent / base, seen + (path.resolve(),)), raw)


def load_train_config(path, overrides=None):
    """Read a YAML training config (``overrides`` replace its keys). A config may start from
    another one (``base: train_mazes.yaml``) and give only what differs."""
    path = Path(path)
    raw = _read_yaml_chain(path)
    raw.update(overrides or {})
    try:
        return TrainConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise FileFormatError(path, str(exc)) from None
