"""Tasks run in worker processes, robust to a worker that dies.

``multiprocessing.Pool`` replaces a worker that dies without a word (a segfault in a native
renderer, the kernel's OOM killer) and then waits forever for the task that worker held.
:func:`run_tasks` gives each task a process of its own, at most ``workers`` at a time; the task
of a process that died without a result runs again, up to ``retries`` times, after which it
stops with a one-line :class:`~dmn_localizer.util.errors.UserError`. An exception raised by a
task stops the other workers and is raised here.
"""
import logging
import multiprocessing as mp
from multiprocessing.connection import wait
import pickle
import queue

from dmn_localizer.util.errors import UserError

log = logging.getLogger(__name__)

POLL_S = 0.2          # how often ``tick`` runs while the workers work
LAST_WORD_S = 2.0     # how long a process that has exited may take to deliver its result


def _child(fn, index, task, results, initializer, initargs):
    if initializer is not None:
        initializer(*initargs)
    try:
        out = (index, True, fn(task))
    except BaseException as exc:   # handed to the parent, which raises it
        try:
            pickle.dumps(exc)
        except Exception:
            exc = RuntimeError(f'{type(exc).__name__}: {exc}')
        out = (index, False, exc)
    results.put(out)


def run_tasks(fn, tasks, workers, initializer=None, initargs=(), tick=None, retries=2,
              describe=str, context='spawn'):
    """``[fn(t) for t in tasks]``, computed in worker processes (``context``: a
    multiprocessing start method). ``fn`` and ``initializer`` must be importable module-level
    functions; ``initializer(*initargs)`` runs in each worker before its task; ``tick()`` runs
    in this process every :data:`POLL_S` seconds (e.g. to show progress); ``describe(task)``
    names a task in warnings and errors."""
    ctx = mp.get_context(context)
    results = ctx.Queue()
    out, tries = {}, [0] * len(tasks)
    pending, running = list(range(len(tasks))), {}

    def collect(timeout=None):
        while True:
            try:
                i, ok, value = results.get(timeout=timeout) if timeout else results.get_nowait()
            except queue.Empty:
                return
            if not ok:
                raise value
            out[i] = value
            timeout = None

    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                i = pending.pop(0)
                p = ctx.Process(target=_child, daemon=True,
                                args=(fn, i, tasks[i], results, initializer, initargs))
                p.start()
                running[i] = p
            wait([p.sentinel for p in running.values()], timeout=POLL_S)
            collect()
            if tick is not None:
                tick()
            for i, p in list(running.items()):
                if p.is_alive():
                    continue
                p.join()
                if i not in out:
                    collect(timeout=LAST_WORD_S)
                del running[i]
                if i in out:
                    continue
                tries[i] += 1
                if tries[i] > retries:
                    raise UserError(f'{describe(tasks[i])}: its worker process died '
                                    f'{tries[i]} times (last exit code {p.exitcode}); giving up')
                log.warning('%s: its worker process died (exit code %s); running it again',
                            describe(tasks[i]), p.exitcode)
                pending.append(i)
    except BaseException:
        for p in running.values():
            p.terminate()
        for p in running.values():
            p.join()
        raise
    finally:
        results.close()
    return [out[i] for i in range(len(tasks))]


__all__ = ['run_tasks']
