"""Configuration of the DMN networks (one commented dataclass, stored beside the weights)."""
from dataclasses import asdict, dataclass

from dmn_localizer.config import strict_from_dict

ATTENTION_MODES = ('softmax', 'linear', 'sigmoid', 'uniform')
QUERY_TRUNK_SHARING = ('cnn3', 'cnn1', 'none')
# 'dmn' (the paper's DMN, :mod:`dmn_localizer.model.dmn`) or one of the paper's baselines
# (:mod:`dmn_localizer.model.baselines`), or 'aligned', the geometry-aligned observation model
# (:mod:`dmn_localizer.model.aligned`)
ARCHITECTURES = ('dmn', 'latent_image', 'latent_vector', 'regression', 'aligned')
CONTEXT_POOLINGS = ('sum', 'overlap_attention')
LATENT_MAPS = ('latent_image', 'latent_vector')


@dataclass
class DMNConfig:
    # Which network (model files record it; cards without it are 'dmn'): 'dmn'; the latent
    # map baselines 'latent_image' and 'latent_vector' (no attention, no egocentric
    # transform: attention, attention_temperature, query_trunk_sharing and egocentric must
    # keep their defaults); 'regression' (the DMN networks with one "particle" at the previous
    # estimate and a pose-offset output; every DMN option applies).
    architecture: str = 'dmn'
    # Square input images (pixels); the view embedding is image_size/4 on a side. The FC1 input
    # size depends on it, so a model serves one image size.
    image_size: int = 32
    # Fixed length (metres) that egocentric context offsets are divided by: half the paper's
    # 40 m world, so in-world offsets fall in [-2, 2]. Not tied to any map's size or origin.
    coord_scale_m: float = 20.0
    # Attention over contexts from the scalar product of view key and query key (the paper
    # does not say whether it is normalised): 'softmax' over contexts (weights sum to 1, the
    # default), 'linear' (raw scaled products), 'sigmoid' (independent gates in (0, 1)),
    # 'uniform' (every context weighs 1/N whatever the keys: the paper's "DMN without
    # attention" ablation; CNN3 then gets no gradient).
    attention: str = 'softmax'
    # The products are divided by sqrt(key elements) * attention_temperature.
    attention_temperature: float = 1.0
    # The paper says "the first three layers of CNN4 and CNN5 are shared", but CNN4 has two
    # layers and reads view embeddings, not images. Resolution: the three layers that CNN5
    # has in common with another image network (32-2-2, 32-3-1, 64-2-2) form a shared
    # query-image trunk. 'cnn3': CNN3 and CNN5 share it (default: both read the query image
    # and start with exactly these layers); 'cnn1': CNN1, CNN3 and CNN5 all share it (siamese
    # context/query encoders); 'none': no sharing.
    query_trunk_sharing: str = 'cnn3'
    # The paper writes FC1 (512-relu, 1-relu); a relu on a log-likelihood would clip all
    # negative evidence, so the last layer is linear by default.
    final_relu: bool = False
    # Egocentric spatial attention (the paper's): context viewpoints enter CNN2 in each
    # particle's frame. False is the paper's "DMN without egocentric transform" ablation: the
    # context viewpoint and the particle pose, both in the map frame (x/L, y/L, sin, cos),
    # are tiled and concatenated to the view embedding instead (CNN2 reads 64 + 8 channels).
    egocentric: bool = True
    # Weight init: He (Kaiming) for relu layers; the last FC layer starts this many times
    # smaller than a unit-gain init so the initial log-likelihoods are near zero.
    last_layer_init_scale: float = 0.1
    # architecture 'aligned' only (the DMN options above must keep their defaults there):
    # the horizontal field of view (degrees) of the camera it is trained for (a loaded model
    # adapts to another camera with set_camera), the length of its unit column features and
    # descriptor, and whether it warps columns by geometry (False: the ablation that compares
    # column j with column j and sees the relative pose only through its pose features).
    hfov_deg: float = 90.0
    feature_dim: int = 32
    warp: bool = True
    # architecture 'aligned' only: how the per-context scores of a particle combine. 'sum':
    # every context is independent evidence (a map with each view twice counts it twice);
    # 'overlap_attention': the log of the mean of exp(score) over contexts weighted by the
    # share of the query each context sees from the particle, so the contexts that overlap
    # the particle's view decide, and a dense map of near-duplicate views is not counted as
    # many independent observations.
    context_pooling: str = 'sum'

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f'architecture must be one of {ARCHITECTURES}, '
                             f'got {self.architecture!r}')
        if self.architecture in LATENT_MAPS + ('aligned',):
            changed = [f for f in ('attention', 'attention_temperature', 'query_trunk_sharing',
                                   'egocentric') if getattr(self, f) != getattr(DMNConfig, f)]
            if changed:
                raise ValueError(f'{", ".join(changed)}: DMN options that architecture '
                                 f'{self.architecture!r} does not use (leave the defaults)')
        if self.architecture == 'regression' and self.final_relu:
            raise ValueError('final_relu: a regression model outputs a pose offset, which a '
                             'relu would clip')
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f'attention must be one of {ATTENTION_MODES}, '
                             f'got {self.attention!r}')
        if self.query_trunk_sharing not in QUERY_TRUNK_SHARING:
            raise ValueError(f'query_trunk_sharing must be one of {QUERY_TRUNK_SHARING}, '
                             f'got {self.query_trunk_sharing!r}')
        if self.image_size % 4 or self.image_size < 8:
            raise ValueError(f'image_size must be a multiple of 4 and >= 8, '
                             f'got {self.image_size}')
        if self.architecture == 'aligned' and self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 for architecture 'aligned', "
                             f'got {self.image_size}')
        if not 1.0 <= self.hfov_deg < 180.0:
            raise ValueError(f'hfov_deg must be within [1, 180), got {self.hfov_deg}')
        if self.feature_dim < 1:
            raise ValueError('feature_dim must be positive')
        if self.context_pooling not in CONTEXT_POOLINGS:
            raise ValueError(f'context_pooling must be one of {CONTEXT_POOLINGS}, '
                             f'got {self.context_pooling!r}')
        if self.architecture != 'aligned' and self.context_pooling != 'sum':
            raise ValueError("context_pooling: an option of architecture 'aligned' only")
        if self.architecture != 'aligned' and not self.warp:
            raise ValueError("warp: an option of architecture 'aligned' only")
        if self.coord_scale_m <= 0:
            raise ValueError('coord_scale_m must be positive')

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Build from a dict; unknown keys raise ValueError listing the valid ones."""
        return strict_from_dict(cls, d, 'DMNConfig')
