"""Measuring one configuration in this process (:func:`measure`), and the machine's peak.

What is timed ("one observation update"), with the map built beforehand:

* ``fast``: :meth:`DMN.encode_query` of one query image plus
  :meth:`Localizer.log_likelihood
  <dmn_localizer.localization.localizer.Localizer.log_likelihood>` for K
  particles, i.e. exactly what the localizer node runs. Variant ``nearest_m``: each particle
  attends to its ``M`` nearest contexts (the node's default, M = 8; all contexts when
  ``Nc <= M``). Variant ``all_contexts``: every particle attends to all Nc contexts (in chunks
  of ``fast_pairs // Nc`` particles, bounding memory). The map (:meth:`Localizer.set_map`,
  i.e. :meth:`DMN.build_map`) is built before timing; its time is reported as ``build_ms``.
* ``reference``: :meth:`DMN.reference_log_likelihood` (the literal per-particle, per-context
  formulation) over the K particles in chunks of ``ref_pairs // Nc`` particles (variant
  ``literal``). Being literal, every call re-embeds the contexts (CNN1, CNN4) and re-encodes
  the query; that work is inside its latency and its FLOPs (``reembed_flop_share`` is the share
  of the row's FLOPs spent on it; < 1 % at Nc = 4). Where a full update would take longer than
  the time cap, one chunk is timed and the latency extrapolated linearly in K
  (``latency = t_chunk * K / chunk``): such rows carry ``"extrapolated": true``.

Rates: ``latency_ms`` is the median over the timed updates (after :data:`WARMUP_UPDATES`
untimed warm-up updates on the fast path: the first few after a process starts are up to 1.5x
slower), ``hz = 1000 / latency_ms``.

``peak_gflops`` is an *estimate* of the achievable fp32 peak:
the better rate of a large square fp32 matmul (n = 2048 on CPU, 8192 on CUDA) and of a 3x3
64 -> 64 channels-last convolution on 256 maps of 8 x 8 (the fast path's main kernel), on the
same device and threads (:func:`estimate_peak_gflops`). On CUDA, TF32 is switched off so fp32
means fp32.

Memory (:class:`MemoryProbe`): ``peak_mem_mb`` is the extra memory one update needs beyond
the loaded model, map and inputs (each configuration in its own child process,
:mod:`dmn_localizer.bench.workers`): on CPU the rise of the process's resident set (``VmHWM``
from /proc/self/status, its high-water mark reset through /proc/self/clear_refs after a
warm-up update and ``malloc_trim``; method ``rss_hwm``; where the reset is not possible,
the rise of ``getrusage`` maxrss, method ``maxrss``, a lower bound); on CUDA
``torch.cuda.max_memory_allocated`` minus the allocation before the update (method
``cuda_allocated``). For extrapolated reference rows it is one chunk's peak, which is the
chunked update's peak (chunks run one after another).
"""
import gc
import math
import platform
import statistics
import time

from dmn_localizer.bench.plan import BenchConfig
from dmn_localizer.util.allocator import release_free_memory

WARMUP_UPDATES = 3
WORLD_SIZE_M = 40.0


def _proc_status_kb(name):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(name + ':'):
                return int(line.split()[1])
    raise OSError(f'{name} not in /proc/self/status')


class MemoryProbe:
    """Peak extra memory (MB) of a block of work; see the module docstring for the methods."""

    def __init__(self, device):
        import torch
        self.torch = torch
        self.cuda = torch.device(device).type == 'cuda'
        self.method = 'cuda_allocated' if self.cuda else None

    def __enter__(self):
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.base = self.torch.cuda.memory_allocated()
            self.torch.cuda.reset_peak_memory_stats()
            return self
        release_free_memory()
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')          # reset the peak RSS to the current RSS
            self.base = _proc_status_kb('VmRSS')
            self.method = 'rss_hwm'
        except OSError:
            import resource
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.method = 'maxrss'
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.peak_mb = (self.torch.cuda.max_memory_allocated() - self.base) / 2 ** 20
        elif self.method == 'rss_hwm':
            self.peak_mb = (_proc_status_kb('VmHWM') - self.base) / 1024
        else:
            import resource
            self.peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                            - self.base) / 1024
        self.peak_mb = max(0.0, float(self.peak_mb))
        return False


def make_inputs(image_size, nc, k, seed=0):
    """Deterministic random inputs: context images (Nc, S, S, 3) uint8, context poses (Nc, 3)
    float64 and particles (K, 3) float32 uniform over a 40 m square, a query (S, S, 3)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    s = image_size
    lo, hi = [0.0, 0.0, -math.pi], [WORLD_SIZE_M, WORLD_SIZE_M, math.pi]
    return (rng.integers(0, 256, (nc, s, s, 3), dtype=np.uint8),
            rng.uniform(lo, hi, (nc, 3)),
            rng.integers(0, 256, (s, s, 3), dtype=np.uint8),
            rng.uniform(lo, hi, (k, 3)).astype(np.float32))


def load_bench_model(path, seed=0, device='cpu'):
    """(model, label): the model at ``path``, or a random init (torch seed ``seed``) if None."""
    import torch
    from dmn_localizer.model.config import DMNConfig
    from dmn_localizer.model.dmn import DMN
    if path:
        from dmn_localizer.model.io import load_model
        return load_model(path, device), str(path)
    torch.manual_seed(seed)
    return DMN(DMNConfig()).to(device).eval(), f'random-init(seed={seed})'


class _Update:
    """Callables for one configuration: ``full(particles)`` (one update, (1, K, 3) -> (1, K))
    and, for the reference, ``chunk`` (particles per call)."""

    def __init__(self, cfg: BenchConfig, model, inputs, dev):
        import torch
        from dmn_localizer.model.preprocess import images_to_tensor
        self.torch, self.dev, self.cfg, self.model = torch, dev, cfg, model
        ctx_images, ctx_poses, query, particles = inputs
        self.query = query
        self.particles = torch.as_tensor(particles, device=dev)[None]
        self.images_to_tensor = images_to_tensor
        self.build_ms = None
        if cfg.path == 'reference':
            self.chunk = min(cfg.K, max(1, cfg.ref_pairs // cfg.Nc))
            self.ctx_images = images_to_tensor(ctx_images[None], dev)
            self.ctx_poses = torch.as_tensor(ctx_poses, dtype=torch.float32, device=dev)[None]
            return
        from dmn_localizer.config import LocalizerConfig
        from dmn_localizer.localization.localizer import Localizer
        from dmn_localizer.mapping.view_map import ViewMap
        if cfg.variant == 'all_contexts':
            self.chunk = max(1, cfg.fast_pairs // cfg.Nc)
            m = 0
        else:
            self.chunk, m = cfg.localizer_chunk, cfg.M
        self.loc = Localizer(model, LocalizerConfig(nearest_contexts=m), dev, chunk=self.chunk)
        vm = ViewMap(images=ctx_images, poses=ctx_poses)
        self.sync()
        t0 = time.perf_counter()
        self.loc.set_map(vm)
        self.sync()
        self.build_ms = (time.perf_counter() - t0) * 1e3

    def sync(self):
        if self.dev.type == 'cuda':
            self.torch.cuda.synchronize()

    def full(self, particles=None):
        particles = self.particles if particles is None else particles
        if self.cfg.path == 'reference':
            qi = self.images_to_tensor(self.query[None], self.dev)
            return self.torch.cat([
                self.model.reference_log_likelihood(self.ctx_images, self.ctx_poses, qi,
                                                    particles[:, i:i + self.chunk])
                for i in range(0, particles.shape[1], self.chunk)], dim=1)
        q = self.model.encode_query(self.images_to_tensor(self.query[None], self.dev))
        # the model's scoring: the outside-the-map rule would skip the bench's random
        # particles far from its contexts and time less work
        return self.loc.model_log_likelihood(q, particles)

    def timed(self, fn, *a):
        self.sync()
        t0 = time.perf_counter()
        out = fn(*a)
        self.sync()
        return out, time.perf_counter() - t0


def _weights_tv(a, b):
    """Total-variation distance between the normalised weights exp(a) and exp(b), (1, K)."""
    import torch
    return 0.5 * float((torch.softmax(a.double(), -1) - torch.softmax(b.double(), -1))
                       .abs().sum())


def _strict_fp32():
    """No TF32 on CUDA: fp32 rows and the peak estimate are true fp32."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def measure(cfg: BenchConfig):
    """Run one configuration in this process; returns a dict of measurements."""
    import contextlib
    import functools
    import torch
    torch.set_num_threads(cfg.threads)
    _strict_fp32()
    dev = torch.device(cfg.device)
    model, label = load_bench_model(cfg.model, cfg.seed, dev)
    inputs = make_inputs(model.config.image_size, cfg.Nc, cfg.K, cfg.seed)
    out = {'model': label, 'threads': cfg.threads, 'extrapolated': False}
    with torch.inference_mode():
        up = _Update(cfg, model, inputs, dev)
        out['build_ms'] = up.build_ms
        out['chunk'] = up.chunk
        if cfg.option == 'bf16_autocast':
            ctx = functools.partial(torch.autocast, device_type=dev.type, dtype=torch.bfloat16)
        else:
            ctx = contextlib.nullcontext
        if cfg.option:
            baseline = up.full().float()
        if cfg.option == 'torch_compile':   # the all-contexts path the localizer calls
            model.log_likelihood = torch.compile(model.log_likelihood)
        work = up.full
        if cfg.path == 'reference':
            # warm up on one chunk; extrapolate from chunks if a full update would exceed the cap
            first = up.particles[:, :up.chunk]
            _, t_warm = up.timed(up.full, first)
            if up.chunk < cfg.K and t_warm * cfg.K / up.chunk > cfg.max_seconds:
                out['extrapolated'] = True
                out['measured_particles'] = up.chunk
                work = functools.partial(up.full, first)
        else:  # warm-up (and, for torch_compile, compilation) outside the memory probe
            with ctx():
                _, t_first = up.timed(up.full)
                for _ in range(WARMUP_UPDATES - 1):
                    up.full()
            if cfg.option == 'torch_compile':
                out['compile_s'] = t_first
        with MemoryProbe(dev) as mem, ctx():  # not timed: the probe's page faults would count
            work()
        out['peak_mem_mb'], out['mem_method'] = mem.peak_mb, mem.method
        out['peak_rss_mb'] = (_proc_status_kb('VmHWM') / 1024 if dev.type == 'cpu'
                              else torch.cuda.max_memory_allocated() / 2 ** 20)
        samples, start = [], time.perf_counter()
        while not samples or (len(samples) < cfg.repeats and time.perf_counter() - start
                              + statistics.median(samples) <= cfg.max_seconds):
            with ctx():
                result, t = up.timed(work)
            samples.append(t)
        latency = statistics.median(samples)
        if out['extrapolated']:
            latency *= cfg.K / up.chunk
        out['latency_ms'] = latency * 1e3
        out['hz'] = 1.0 / latency
        out['samples'] = len(samples)
        out['latency_spread_ms'] = [min(samples) * 1e3, max(samples) * 1e3]
        if cfg.option:
            result = result.float()
            out['max_abs_err'] = float((result - baseline).abs().max())
            out['max_abs_ll'] = float(baseline.abs().max())
            out['weights_tv'] = _weights_tv(result, baseline)
            out['same_argmax'] = bool(result.argmax() == baseline.argmax())
    return out


def describe_device(device, threads):
    """A one-line description of the device, e.g. 'cpu: AMD EPYC (2 threads)'."""
    import torch
    if device == 'cuda':
        return f'cuda: {torch.cuda.get_device_name(0)}'
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    name = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    plural = 's' if threads != 1 else ''
    return f'cpu: {name} ({threads} thread{plural}, torch {torch.__version__})'


def estimate_peak_gflops(device='cpu', n=2048, repeats=3, threads=None, min_seconds=0.5):
    """Achievable fp32 peak estimate: the better of two compute-bound kernels, each its best
    GFLOP/s over at least ``repeats`` runs and ``min_seconds`` (after one warm-up run): an
    n x n x n matmul (2 n^3 FLOPs) and the fast path's own kind of convolution, 3x3, 64 -> 64
    channels, channels-last, on 256 maps of 8 x 8 (counted as 9 taps per output, like the
    rows). On CPUs the convolution is the faster one (oneDNN's direct convolution beats its
    matmul on a Zen 4), so a matmul alone understates the peak."""
    import torch
    import torch.nn.functional as F
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    _strict_fp32()
    g = torch.Generator(device='cpu').manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dev)
    b = torch.randn(n, n, generator=g).to(dev)
    x = torch.randn(256, 64, 8, 8, generator=g).to(dev).contiguous(
        memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, generator=g).to(dev)

    def best_seconds(fn):
        times = []
        start = time.perf_counter()
        with torch.inference_mode():
            while len(times) <= repeats or time.perf_counter() - start < min_seconds:
                if dev.type == 'cuda':
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                if dev.type == 'cuda':
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        return min(times[1:])                                    # the first is a warm-up

    matmul = 2.0 * n ** 3 / best_seconds(lambda: torch.mm(a, b)) / 1e9
    conv = 2.0 * 256 * 64 * 64 * 9 * 64 / best_seconds(lambda: F.conv2d(x, w, padding=1)) / 1e9
    return max(matmul, conv)
