"""The view-pair recipe's training config (``recipe: view_pairs`` in a training YAML)."""
from dataclasses import dataclass, field

import yaml

from dmn_localizer.config import strict_from_dict
from dmn_localizer.data.dataset import QUERY_ORDERS
from dmn_localizer.model.config import DMNConfig
from dmn_localizer.util.errors import UserError

RECIPE = 'view_pairs'


@dataclass
class ViewPairConfig:
    recipe: str = RECIPE
    train_data: str = 'data/mazes/train'
    val_data: str = 'data/mazes/val'
    model: dict = field(default_factory=dict)   # DMNConfig fields; architecture 'aligned'
    init_from: str = None        # start from this model's weights (same config)
    seed: int = 0
    batch_size: int = 32
    contexts: int = 4
    candidates: int = 64
    overlap_prob: float = 0.6
    min_overlap: float = 0.3
    near_std: tuple = (0.75, 10.0)      # metres, degrees
    far_std: tuple = (2.5, 30.0)
    kernel_start: tuple = (1.5, 20.0)
    kernel_end: tuple = (0.5, 8.0)
    curriculum_steps: int = 2000
    depth_weight: float = 1.0
    # the coarse term: the same cross-entropy over ``coarse_candidates`` poses spread over the
    # world's free space (jittered poses of its views, random yaw, plus a few near the truth)
    # against a wide kernel (metres, degrees): where in the world, from what the views share
    coarse_weight: float = 1.0
    coarse_candidates: int = 64
    coarse_kernel: tuple = (4.0, 90.0)
    # hard negatives for the coarse term (0: off): each step, ``mined_pool`` poses uniform over
    # the extent of the world's views (position and yaw, as a global filter's first sample)
    # are scored by the model being trained (no gradient), and the ``mined_candidates``
    # best-scoring join the coarse candidates: the look-alikes that outscore the truth
    mined_candidates: int = 0
    mined_pool: int = 1024
    # the warp uses the true column depths (where known) in a share of the batches that falls
    # linearly from 1 at step 0 to 0 at this step: the comparison learns on correct warps
    # while the depth head is still poor, and on the predicted depths it will see at run time
    true_depth_steps: int = 2000
    lr: float = 1e-3
    lr_end: float = 1e-4
    grad_clip: float = 10.0
    max_steps: int = 8000
    max_minutes: float = 0.0     # wall-clock budget; 0: none
    threads: int = 2
    device: str = 'auto'
    max_train_worlds: int = 0    # 0: all
    val_every: int = 250
    val_queries: int = 256
    eval_every: int = 2000
    eval_episodes: int = 100
    # the query views of the protocol validation (``eval --queries``): 'trajectory' or
    # 'random' (the paper's sampling)
    eval_queries: str = 'trajectory'
    # weight of the candidate terms (fine and coarse cross-entropy); 0 with depth_weight 0
    # skips the candidate batches (an end-to-end stage)
    pair_weight: float = 1.0
    # the end-to-end term (0: off): the dense loss (cross-entropy of the filter's normalised
    # weights against a ``rollout_kernel`` (metres, degrees) kernel about the truth, every
    # step) of a particle filter run with soft resampling through ``rollout_steps`` query views
    # of ``rollout_batch`` episodes of the training data (queries drawn as
    # ``rollout_queries``), from ``rollout_particles`` particles: uniform over the world,
    # ``rollout_near_truth`` of them near the first true pose and ``rollout_decoys`` of them
    # decoys (its pose relative to its nearest context, re-anchored at the others). It trains
    # the scores as the filter multiplies them, on the episodes the protocol measures.
    # ``rollout_contexts`` contexts per episode (0: ``contexts``), each particle scored against
    # its ``rollout_nearest_contexts`` nearest (0: all), as the localizer does on a dense map.
    rollout_weight: float = 0.0
    rollout_batch: int = 8
    rollout_steps: int = 5
    rollout_particles: int = 64
    rollout_kernel: tuple = (1.0, 15.0)
    rollout_queries: str = 'random'
    rollout_near_truth: float = 0.25
    rollout_decoys: float = 0.25
    rollout_contexts: int = 0
    rollout_nearest_contexts: int = 0
    # weight of the match term (0: off): the scores read as the log-odds that a query view is
    # seen from a pose of the map, a logistic loss with label 1 at the true pose of each
    # rollout episode's first query where a context sees it (within 2 m and 45 deg) and 0 at
    # the best-scoring of ``rollout_match_particles`` poses near the contexts of another
    # episode's map (another world: none can match). It trains the scores' level, which the
    # localizer's lost flag reads (``min_evidence``).
    rollout_match_weight: float = 0.0
    rollout_match_particles: int = 32

    def __post_init__(self):
        for name in ('near_std', 'far_std', 'kernel_start', 'kernel_end', 'coarse_kernel',
                     'rollout_kernel'):
            setattr(self, name, tuple(float(x) for x in getattr(self, name)))
        if self.recipe != RECIPE:
            raise ValueError(f'recipe must be {RECIPE!r}, got {self.recipe!r}')
        if self.candidates < 32:
            raise ValueError('candidates must be >= 32')
        if self.contexts < 1 or self.batch_size < 2:
            raise ValueError('contexts must be >= 1 and batch_size >= 2')
        for name in ('eval_queries', 'rollout_queries'):
            if getattr(self, name) not in QUERY_ORDERS:
                raise ValueError(f'{name} must be one of {", ".join(QUERY_ORDERS)}')
        if self.pair_weight < 0 or self.rollout_weight < 0 or self.depth_weight < 0:
            raise ValueError('pair_weight, rollout_weight and depth_weight must be >= 0')
        if not (self.pair_weight or self.rollout_weight or self.depth_weight):
            raise ValueError('pair_weight, rollout_weight and depth_weight are all 0: '
                             'nothing to train')
        if self.rollout_weight and (self.rollout_steps < 1 or self.rollout_particles < 2
                                    or self.rollout_batch < 1):
            raise ValueError('rollout_steps, rollout_batch must be >= 1 and '
                             'rollout_particles >= 2')
        if self.mined_candidates < 0 or self.mined_pool < self.mined_candidates:
            raise ValueError('mined_candidates must be >= 0 and mined_pool >= '
                             'mined_candidates')
        if self.mined_candidates and not self.coarse_weight:
            raise ValueError('mined_candidates join the coarse term: coarse_weight must be > 0')
        if self.rollout_match_weight < 0 or self.rollout_match_particles < 1:
            raise ValueError('rollout_match_weight must be >= 0 and rollout_match_particles '
                             '>= 1')
        if self.rollout_contexts < 0 or self.rollout_nearest_contexts < 0:
            raise ValueError('rollout_contexts and rollout_nearest_contexts must be >= 0')
        if not 0 <= self.rollout_near_truth + self.rollout_decoys <= 1:
            raise ValueError('rollout_near_truth + rollout_decoys must be in [0, 1]')

    @property
    def uses_pairs(self):
        """Whether a step draws a candidate batch (the pair or the depth term is on)."""
        return self.pair_weight > 0 or self.depth_weight > 0

    def model_config(self, hfov_deg):
        d = {'architecture': 'aligned', 'hfov_deg': hfov_deg, **self.model}
        if d['architecture'] != 'aligned':
            raise ValueError("the view_pairs recipe trains architecture 'aligned' only")
        return DMNConfig.from_dict(d)


def load_view_pair_config(path, overrides=None):
    try:
        with open(path, encoding='utf-8') as f:
            d = yaml.safe_load(f) or {}
    except OSError as exc:
        raise UserError(f'{path}: {exc.strerror}') from None
    d.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return strict_from_dict(ViewPairConfig, d, 'view_pairs config')
    except (TypeError, ValueError) as exc:
        raise UserError(f'{path}: {exc}') from None


def is_view_pair_config(path):
    """Whether the training YAML at ``path`` asks for this recipe (``recipe: view_pairs``)."""
    try:
        with open(path, encoding='utf-8') as f:
            d = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(d, dict) and d.get('recipe') == RECIPE
