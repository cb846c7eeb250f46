"""What one benchmark run measures: the configurations (:class:`BenchConfig`) of the K and Nc
sweeps, the variants of each path and the options, in run order (:func:`make_plan`)."""
from dataclasses import dataclass, field

K_SWEEP = (256, 2048, 8192)
K_SWEEP_GPU_EXTRA = (16384,)
NC_SWEEP = (4, 64, 1024)
K_FOR_NC_SWEEP = 2048
NC_FOR_K_SWEEP = 4
NEAREST_M = 8
# aligned models: further counts of nearest contexts per particle, at K_FOR_NC_SWEEP and the
# largest map (a model card may choose more than 8: docs/performance.md)
ALIGNED_M_SWEEP = (16, 32)
OPTIONS = ('bf16_autocast', 'torch_compile')

# --quick: a tiny grid that still exercises every path (Nc > M uses the nearest-M selection)
QUICK_K = 32
QUICK_NC = (4, 16)


@dataclass
class BenchConfig:
    """One measured configuration (what a child process runs)."""
    path: str                     # 'reference' | 'fast'
    variant: str                  # 'literal' | 'nearest_m' | 'all_contexts'
    K: int
    Nc: int
    M: int = 0                    # nearest contexts (fast nearest_m); 0 = all
    option: str = None            # None | 'bf16_autocast' | 'torch_compile'
    device: str = 'cpu'
    threads: int = 1
    model: str = None             # model path, or None for a random init with ``seed``
    seed: int = 0
    repeats: int = 10
    max_seconds: float = 60.0     # time cap of one configuration's timed updates
    ref_pairs: int = 16384        # reference chunk: ref_pairs // Nc particles
    fast_pairs: int = 8192        # all_contexts chunk: fast_pairs // Nc particles
    localizer_chunk: int = 512    # Localizer(chunk=...) for nearest_m (the node's default)
    compile_timeout: float = 300.0

    def key(self):
        return (self.path, self.variant, self.K, self.Nc, self.option)


@dataclass
class BenchPlan:
    configs: list = field(default_factory=list)
    peak_matmul_n: int = 2048


def make_plan(device='cpu', quick=False, options=False, threads=1, model=None, seed=0,
              repeats=10, max_seconds=60.0, ref_pairs=16384, fast_pairs=8192,
              aligned_model=None):
    """The configurations of one benchmark run (deduplicated, in run order). With
    ``aligned_model`` (a model path), every grid point also gets a row of that aligned
    observation model on the localizer's path (variant ``aligned``), and the largest map of
    the Nc sweep rows at :data:`ALIGNED_M_SWEEP` nearest contexts."""
    common = dict(device=device, threads=threads, model=model, seed=seed, repeats=repeats,
                  max_seconds=max_seconds, ref_pairs=ref_pairs, fast_pairs=fast_pairs)
    if quick:
        ks, nc_k, ncs, k_nc = (QUICK_K,), NC_FOR_K_SWEEP, QUICK_NC, QUICK_K
    else:
        ks = K_SWEEP + (K_SWEEP_GPU_EXTRA if device == 'cuda' else ())
        nc_k, ncs, k_nc = NC_FOR_K_SWEEP, NC_SWEEP, K_FOR_NC_SWEEP
    grid = [(k, nc_k) for k in ks] + [(k_nc, nc) for nc in ncs]
    grid = list(dict.fromkeys(grid))
    configs = []
    for k, nc in grid:
        configs.append(BenchConfig('reference', 'literal', k, nc, **common))
        configs.append(BenchConfig('fast', 'nearest_m', k, nc, M=NEAREST_M, **common))
        if nc > NEAREST_M:
            configs.append(BenchConfig('fast', 'all_contexts', k, nc, **common))
        if aligned_model:
            configs.append(BenchConfig('fast', 'aligned', k, nc, M=NEAREST_M,
                                       **dict(common, model=aligned_model)))
    if aligned_model and not quick:
        configs += [BenchConfig('fast', 'aligned', k_nc, max(ncs), M=m,
                                **dict(common, model=aligned_model)) for m in ALIGNED_M_SWEEP]
    if options:
        option_grid = [(QUICK_K, nc_k)] if quick else [(256, nc_k), (k_nc, nc_k)]
        for option in OPTIONS:
            for k, nc in option_grid[-1:] if option == 'torch_compile' else option_grid:
                configs.append(BenchConfig('fast', 'nearest_m', k, nc, M=NEAREST_M,
                                           option=option, **common))
    return BenchPlan(configs, peak_matmul_n=512 if quick else 8192 if device == 'cuda' else 2048)
