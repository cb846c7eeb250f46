"""Observation-update benchmark: speed, FLOP rate and memory of the reference and fast paths.

Pure torch (no rclpy). :func:`run_benchmark` is what ``dmn-localizer bench`` runs.

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

FLOPs are counted analytically (:class:`FlopModel`) from the layer shapes of what each path
computes, in the convention of :class:`torch.utils.flop_counter.FlopCounterMode` (the tests
check the two agree): 2 x multiply-accumulates of every convolution, transposed convolution,
matrix product and linear layer, zero-padded border positions included; element-wise work
(adds, relu, softmax, sin/cos, the reference's weighted sum) and indexing (nearest-context
search and gathers) are not counted. With ``P = 64 h w`` (``h = w = image_size / 4``),
``conv(ci, co) = 2 ci co 9 h w`` (3x3, stride 1) and the head
``head = 2 conv(64, 64) + 2 (P 512 + 512)``::

    fast update      = Q + K (conv(64, 32) + conv(32, 64) + head) + K Na 14 P
        Q            = CNN3 + CNN5 + 2 32 64 9 h w (adjoint of conv2b) + conv(64, 64)
        Na           = min(Nc, M) for nearest_m, Nc for all_contexts
        14 P / pair  = 8 P (coordinate basis maps) + 2 P (scores) + 2 P (attended keys)
                       + 2 P (attended CNN6 map features)
    reference update = sum over chunks of k particles of
                       CNN3 + CNN5 + Nc (CNN1 + CNN4)
                       + k Nc (conv(68, 64) + conv(64, 32) + 2 32 h w)
                       + k (conv(160, 64) + head)

``gflops`` = FLOPs / latency. ``peak_gflops`` is an *estimate* of the achievable fp32 peak:
the better rate of a large square fp32 matmul (n = 2048 on CPU, 8192 on CUDA) and of a 3x3
64 -> 64 channels-last convolution on 256 maps of 8 x 8 (the fast path's main kernel), on the
same device and threads (:func:`estimate_peak_gflops`). On CUDA, TF32 is switched off so fp32
means fp32.

Memory: every configuration runs in its own child process (``--quick``: all in one).
``peak_mem_mb`` is the extra memory one update needs beyond the loaded model, map and inputs:
on CPU the rise of the process's
resident set (``VmHWM`` from /proc/self/status, its high-water mark reset through
/proc/self/clear_refs after a warm-up update and ``malloc_trim``; method ``rss_hwm``; where the
reset is not possible, the rise of ``getrusage`` maxrss, method ``maxrss``, a lower bound); on
CUDA ``torch.cuda.max_memory_allocated`` minus the allocation before the update (method
``cuda_allocated``). For extrapolated reference rows it is one chunk's peak, which is the
chunked update's peak (chunks run one after another).
"""
from dataclasses import asdict, dataclass, field
import gc
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dmn_localizer.util.allocator import keep_freed_memory, release_free_memory

logger = logging.getLogger(__name__)

K_SWEEP = (256, 2048, 8192)
K_SWEEP_GPU_EXTRA = (16384,)
NC_SWEEP = (4, 64, 1024)
K_FOR_NC_SWEEP = 2048
NC_FOR_K_SWEEP = 4
NEAREST_M = 8
OPTIONS = ('bf16_autocast', 'torch_compile')
WARMUP_UPDATES = 3
WORLD_SIZE_M = 40.0

# --quick: a tiny grid that still exercises every path (Nc > M uses the nearest-M selection)
QUICK_K = 32
QUICK_NC = (4, 16)


# ------------------------------------------------------------------------------ FLOP model
class FlopModel:
    """Analytic FLOP counts (2 x MACs of conv/matmul/linear) for one image size.

    Layer shapes follow :mod:`dmn_localizer.model.dmn`; see the module docstring for the
    formulas. All methods return Python ints.
    """

    def __init__(self, image_size=32):
        self.s = image_size
        self.h = image_size // 4
        self.hw = self.h * self.h
        self.P = 64 * self.hw

    def conv3(self, cin, cout):
        """A 3x3 stride-1 zero-padded conv on the h x w feature map."""
        return 2 * cin * cout * 9 * self.hw

    def trunk(self):
        """The shared image trunk (32-2-2, 32-3-1, 64-2-2) on one image."""
        half = (self.s // 2) ** 2
        return 2 * 3 * 32 * 4 * half + 2 * 32 * 32 * 9 * half + 2 * 32 * 64 * 4 * self.hw

    def cnn1(self):
        return self.trunk() + self.conv3(64, 64)

    def cnn3(self):
        return self.trunk() + self.conv3(64, 32) + self.conv3(32, 64) + self.conv3(64, 32)

    def cnn4(self):
        return self.conv3(64, 128) + self.conv3(128, 64)

    def cnn5(self):
        return self.trunk() + self.conv3(64, 64) + self.conv3(64, 128) + self.conv3(128, 64)

    def head(self):
        """CNN6 layers 2-3 and FC1 for one particle."""
        return 2 * self.conv3(64, 64) + 2 * (self.P * 512 + 512)

    def encode_query(self):
        """:meth:`DMN.encode_query` for one image."""
        return self.cnn3() + self.conv3(32, 64) + self.cnn5() + self.conv3(64, 64)

    def fast_log_likelihood(self, k, n, per_pair=14):
        """:meth:`DMN.log_likelihood` for k particles attending to n contexts each (per pair:
        coordinate maps 8P, scores 2P, weighted sum 2P, CNN6 map term 2P)."""
        return (k * (self.conv3(64, 32) + self.conv3(32, 64) + self.head())
                + k * n * per_pair * self.P)

    def fast_update(self, k, nc, m):
        """Encode the query + the localizer's log-likelihoods (m = 0: all contexts). With
        Nc > M the localizer runs :meth:`DMN.log_likelihood_selected`; counted as torch's
        FlopCounterMode counts it, 10P per pair: its score matrix-vector product and the
        weighted gather (``embedding_bag``) of the CNN6 map term (2P each) are not counted
        (under 2% of the update at K = 2048)."""
        if m <= 0 or nc <= m:
            return self.encode_query() + self.fast_log_likelihood(k, nc)
        return self.encode_query() + self.fast_log_likelihood(k, m, per_pair=10)

    def reference_call(self, k, n):
        """One :meth:`DMN.reference_log_likelihood` call on k particles and n contexts."""
        per_pair = self.conv3(68, 64) + self.conv3(64, 32) + 2 * 32 * self.hw
        return (self.cnn3() + self.cnn5() + n * (self.cnn1() + self.cnn4())
                + k * n * per_pair + k * (self.conv3(160, 64) + self.head()))

    def reference_update(self, k, n, chunk):
        """The reference over k particles in chunks of ``chunk``."""
        full, rest = divmod(k, chunk)
        return full * self.reference_call(chunk, n) + (self.reference_call(rest, n) if rest
                                                       else 0)

    def reference_reembed(self, k, n, chunk):
        """FLOPs the chunked reference spends re-embedding contexts and re-encoding the query
        beyond doing so once per update."""
        calls = math.ceil(k / chunk)
        return (calls - 1) * (self.cnn3() + self.cnn5() + n * (self.cnn1() + self.cnn4()))


# ------------------------------------------------------------------------------ configurations
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
    observation model on the localizer's path (variant ``aligned``)."""
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
    if options:
        option_grid = [(QUICK_K, nc_k)] if quick else [(256, nc_k), (k_nc, nc_k)]
        for option in OPTIONS:
            for k, nc in option_grid[-1:] if option == 'torch_compile' else option_grid:
                configs.append(BenchConfig('fast', 'nearest_m', k, nc, M=NEAREST_M,
                                           option=option, **common))
    return BenchPlan(configs, peak_matmul_n=512 if quick else 8192 if device == 'cuda' else 2048)


# ------------------------------------------------------------------------------ memory probes
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


# ------------------------------------------------------------------------------ child process
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
        from dmn_localizer.model.dmn import images_to_tensor
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
        return self.loc.log_likelihood(q, particles)

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


def child_main():
    """Entry point of a child process: one BenchConfig as JSON per stdin line -> one JSON line
    of measurements (or ``{"error": ...}``) per config on stdout."""
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    keep_freed_memory()  # as in the localizer node and the CLI
    for line in sys.stdin:
        try:
            result = measure(BenchConfig(**json.loads(line)))
        except Exception as exc:  # reported in the row, the run goes on
            logger.debug('measurement failed', exc_info=True)
            result = {'error': f'{type(exc).__name__}: {exc}'[:300]}
        print(json.dumps(result), flush=True)
    return 0


class _Child:
    """A child process measuring configurations one at a time (see :func:`child_main`)."""

    def __init__(self):
        import tempfile
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env['PYTHONPATH'] = root + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH')
                                    else '')
        code = 'import sys; from dmn_localizer.benchmark import child_main; sys.exit(child_main())'
        self.stderr = tempfile.TemporaryFile(mode='w+')
        self.proc = subprocess.Popen([sys.executable, '-c', code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env=env)

    def measure(self, cfg: BenchConfig):
        """(measurements, None) or (None, error); kills the child on timeout."""
        import selectors
        timeout = 4 * cfg.max_seconds + 180 + (cfg.compile_timeout if cfg.option ==
                                               'torch_compile' else 0)
        if cfg.path == 'reference' or cfg.variant == 'all_contexts':
            timeout += 600
        try:
            self.proc.stdin.write(json.dumps(asdict(cfg)) + '\n')
            self.proc.stdin.flush()
        except BrokenPipeError:
            return None, self._died()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.proc.kill()
                self.proc.wait()
                return None, f'timed out after {timeout:.0f} s'
        line = self.proc.stdout.readline()
        if not line:
            return None, self._died()
        result = json.loads(line)
        if 'error' in result:
            return None, result['error']
        return result, None

    def _died(self):
        self.proc.wait()
        self.stderr.seek(0)
        err = self.stderr.read().strip().splitlines()
        return (err[-1] if err else f'child exited with status {self.proc.returncode}')[:300]

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


# ------------------------------------------------------------------------------ parent
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


def _row(cfg, meas, flops_model, peak):
    """A JSON row from a configuration and its child's measurements."""
    row = {'path': cfg.path, 'variant': cfg.variant, 'K': cfg.K, 'Nc': cfg.Nc,
           'M': cfg.M if cfg.path == 'fast' and cfg.variant in ('nearest_m', 'aligned')
           else None, 'option': cfg.option}
    if cfg.variant == 'aligned':   # another network: the DMN's FLOP model does not apply
        row['contexts_attended'] = min(cfg.Nc, cfg.M)
        row.update(meas)
        row.update(gflop_per_update=None, gflops=None, pct_of_peak=None, ok=True)
        return row
    if cfg.path == 'reference':
        chunk = min(cfg.K, max(1, cfg.ref_pairs // cfg.Nc))
        flops = flops_model.reference_update(cfg.K, cfg.Nc, chunk)
        row['reembed_flop_share'] = flops_model.reference_reembed(cfg.K, cfg.Nc, chunk) / flops
    else:
        flops = flops_model.fast_update(cfg.K, cfg.Nc, row['M'] or 0)
        row['contexts_attended'] = min(cfg.Nc, cfg.M) if row['M'] else cfg.Nc
    row['gflop_per_update'] = flops / 1e9
    row.update(meas)
    row['gflops'] = flops / (row['latency_ms'] / 1e3) / 1e9
    row['pct_of_peak'] = 100.0 * row['gflops'] / peak if peak else None
    row['ok'] = True
    return row


def _failed_row(cfg, error):
    return {'path': cfg.path, 'variant': cfg.variant, 'K': cfg.K, 'Nc': cfg.Nc,
            'M': cfg.M or None, 'option': cfg.option, 'hz': 0.0, 'latency_ms': 0.0,
            'gflops': 0.0, 'peak_mem_mb': 0.0, 'ok': False, 'error': error,
            'extrapolated': False}


def add_ratios(runs):
    """Fast rows get ``speedup_vs_reference`` (reference latency / fast latency at the same K
    and Nc); option rows get ``speedup_vs_fp32`` against the plain fast row."""
    ref = {(r['K'], r['Nc']): r for r in runs if r['path'] == 'reference' and r['ok']}
    plain = {(r['K'], r['Nc'], r['variant']): r for r in runs
             if r['path'] == 'fast' and r['ok'] and not r['option']}
    for r in runs:
        if r['path'] != 'fast' or not r['ok']:
            continue
        if r['variant'] == 'aligned':   # against the DMN on the same localizer path
            dmn = plain.get((r['K'], r['Nc'], 'nearest_m'))
            if dmn:
                r['speedup_vs_dmn'] = dmn['latency_ms'] / r['latency_ms']
            continue
        base = ref.get((r['K'], r['Nc']))
        if base:
            r['speedup_vs_reference'] = base['latency_ms'] / r['latency_ms']
        fp32 = plain.get((r['K'], r['Nc'], r['variant']))
        if r['option'] and fp32:
            r['speedup_vs_fp32'] = fp32['latency_ms'] / r['latency_ms']
    return runs


def format_table(result):
    """The human summary printed on stdout."""
    lines = [f"device: {result['device']}",
             f"estimated fp32 peak (best of a large matmul and a 3x3 convolution): "
             f"{result['peak_gflops']:.1f} GFLOP/s",
             f"{'path':9} {'variant':12} {'option':13} {'K':>6} {'Nc':>5} {'M':>3} "
             f"{'lat_ms':>10} {'hz':>8} {'GFLOP/s':>8} {'%peak':>6} {'mem_MB':>7} "
             f"{'x_ref':>6}  note"]
    for r in result['runs']:
        if not r['ok']:
            lines.append(f"{r['path']:9} {r['variant']:12} {r['option'] or '-':13} "
                         f"{r['K']:>6} {r['Nc']:>5}  FAILED: {r['error']}")
            continue
        notes = []
        if r['extrapolated']:
            notes.append(f"EXTRAPOLATED from {r['measured_particles']} particles")
        if r.get('build_ms') is not None:
            notes.append(f"build {r['build_ms']:.0f} ms")
        if 'max_abs_err' in r:
            notes.append(f"max|dll| {r['max_abs_err']:.2e} TV {r['weights_tv']:.1e} "
                         f"x_fp32 {r.get('speedup_vs_fp32', float('nan')):.2f}")
        if 'compile_s' in r:
            notes.append(f"compile {r['compile_s']:.0f} s")
        if 'speedup_vs_dmn' in r:
            notes.append(f"x_dmn {r['speedup_vs_dmn']:.2f}")
        x_ref = r.get('speedup_vs_reference')
        lines.append(
            f"{r['path']:9} {r['variant']:12} {r['option'] or '-':13} {r['K']:>6} "
            f"{r['Nc']:>5} {r['M'] or '-':>3} {r['latency_ms']:>10.1f} {r['hz']:>8.2f} "
            f"{_num(r['gflops']):>8} {_num(r['pct_of_peak']):>6} {r['peak_mem_mb']:>7.1f} "
            f"{f'{x_ref:.1f}' if x_ref else '-':>6}  {'; '.join(notes)}")
    # (fp32 rows only: the peak estimate is fp32; bf16 runs on faster units)
    best = max((r['gflops'] for r in result['runs'] if r['ok'] and not r['option']
                and r['gflops'] is not None), default=0.0)
    if best > result['peak_gflops']:
        lines.append(f"warning: a row reached {best:.1f} GFLOP/s, above the peak estimate: "
                     "the machine was probably busy while it was measured")
    lines += target_lines(result['runs'])
    return '\n'.join(lines)


def _num(x):
    return '-' if x is None else f'{x:.1f}'


def target_lines(runs):
    """Issue 6's CPU targets, checked against the rows present (fp32, nearest_m fast path)."""
    fast = {(r['K'], r['Nc']): r for r in runs if r['path'] == 'fast' and r['ok']
            and r['variant'] == 'nearest_m' and not r['option']}
    out = []

    def check(name, value, ok):
        out.append(f"target {name}: {value} -> {'met' if ok else 'NOT met'}")
    for k, hz in ((256, 30.0), (2048, 5.0)):
        if (k, 4) in fast:
            check(f'K={k} Nc=4 >= {hz:g} Hz', f"{fast[(k, 4)]['hz']:.1f} Hz",
                  fast[(k, 4)]['hz'] >= hz)
    for (k, nc), r in sorted(fast.items()):
        if nc == 4 and 'speedup_vs_reference' in r:
            s = r['speedup_vs_reference']
            check(f'fast/reference >= 3.5x at K={k} Nc=4', f'{s:.1f}x', s >= 3.5)
    aligned = {(r['K'], r['Nc']): r for r in runs if r['path'] == 'fast' and r['ok']
               and r['variant'] == 'aligned' and not r['option']}
    if (2048, 4) in aligned:
        hz = aligned[(2048, 4)]['hz']
        check('aligned K=2048 Nc=4 >= 15 Hz', f'{hz:.1f} Hz', hz >= 15.0)
    if (2048, 1024) in fast and (2048, 4) in fast:
        ratio = fast[(2048, 1024)]['latency_ms'] / fast[(2048, 4)]['latency_ms']
        check('update time Nc=1024 <= 1.5x Nc=4 (K=2048)', f'{ratio:.2f}x', ratio <= 1.5)
    return out


def run_benchmark(device='cpu', quick=False, options=False, threads=None, model=None,
                  seed=0, repeats=10, max_seconds=60.0, ref_pairs=16384, fast_pairs=8192,
                  progress=True, aligned_model=None):
    """Measure every configuration of :func:`make_plan`, each in a fresh child process
    (``quick``: all in one child, for speed; memory is then measured after the earlier ones).

    Returns ``{'device', 'peak_gflops', 'runs'}`` (see the module docstring for the keys).
    ``model`` is a model path or None (random init with ``seed``); ``aligned_model`` adds the
    rows of that aligned model (variant ``aligned``).
    """
    from tqdm import tqdm
    threads = threads or len(os.sched_getaffinity(0))
    plan = make_plan(device, quick, options, threads, model, seed, repeats, max_seconds,
                     ref_pairs, fast_pairs, aligned_model)
    peak = estimate_peak_gflops(device, plan.peak_matmul_n, threads=threads)
    image_size = _image_size(model)
    flops_model = FlopModel(image_size)
    runs, child = [], None
    bar = tqdm(plan.configs, desc='bench', unit='config', disable=not progress, file=sys.stderr)
    for cfg in bar:
        bar.set_postfix_str(f'{cfg.path} {cfg.variant} K={cfg.K} Nc={cfg.Nc}'
                            + (f' {cfg.option}' if cfg.option else ''))
        if child is None or not child.alive():
            child = _Child()
        try:
            meas, err = child.measure(cfg)
        finally:
            if not quick or not child.alive():  # a fresh process per configuration
                child.close()
                child = None
        if err:
            logger.warning('%s %s K=%d Nc=%d %s failed: %s', cfg.path, cfg.variant, cfg.K,
                           cfg.Nc, cfg.option or '', err)
            runs.append(_failed_row(cfg, err))
        else:
            runs.append(_row(cfg, meas, flops_model, peak))
    bar.close()
    if child is not None:
        child.close()
    return {'device': describe_device(device, threads), 'peak_gflops': peak,
            'runs': add_ratios(runs)}


def _image_size(model):
    if not model:
        from dmn_localizer.model.config import DMNConfig
        return DMNConfig().image_size
    from dmn_localizer.model.io import read_card
    return int(read_card(model)['config'].get('image_size', 32))
