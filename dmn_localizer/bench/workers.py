"""The child processes the benchmark measures in: every configuration runs in a fresh one
(``--quick``: all in one), fed one :class:`~dmn_localizer.bench.plan.BenchConfig` per line
(:class:`_Child` in the parent, :func:`child_main` in the child)."""
from dataclasses import asdict
import json
import logging
import os
from pathlib import Path
import subprocess
import sys

from dmn_localizer.bench.measure import measure
from dmn_localizer.bench.plan import BenchConfig
from dmn_localizer.util.allocator import keep_freed_memory

logger = logging.getLogger(__name__)


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
        root = str(Path(__file__).resolve().parents[2])
        env['PYTHONPATH'] = root + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH')
                                    else '')
        code = ('import sys; from dmn_localizer.bench.workers import child_main; '
                'sys.exit(child_main())')
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
