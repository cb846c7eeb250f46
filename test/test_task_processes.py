"""Tasks in worker processes (:mod:`dmn_localizer.util.task_processes`), with real spawned
processes: a worker killed by a segfault has its task run again instead of hanging the caller
(as ``multiprocessing.Pool`` did when ViZDoom crashed in a rendering worker), a task that
always crashes ends in one line, and a task's exception reaches the caller."""
import logging
import os
import signal
import time

import pytest

from dmn_localizer.util.errors import UserError
from dmn_localizer.util.task_processes import run_tasks


def _double_but_crash_first(task):
    """Doubles ``value``; the first call for a ``marker`` path dies of SIGSEGV instead."""
    marker, value = task
    if marker is not None and not os.path.exists(marker):
        open(marker, 'w').close()
        os.kill(os.getpid(), signal.SIGSEGV)
    return 2 * value


def _always_crash(task):
    os.kill(os.getpid(), signal.SIGSEGV)


def _refuse(task):
    if task == 3:
        raise ValueError('task 3 is bad')
    time.sleep(30)   # the others would run long: they must be stopped, not waited for


def _remember_initializer(path):
    global _initialized
    _initialized = path


def _report_initializer(task):
    return _initialized


def test_results_come_in_task_order_from_initialized_workers(tmp_path):
    assert run_tasks(_double_but_crash_first, [(None, v) for v in range(7)], 3) == \
        [2 * v for v in range(7)]
    assert run_tasks(_report_initializer, [0, 1], 2, initializer=_remember_initializer,
                     initargs=('ready',)) == ['ready', 'ready']
    assert run_tasks(_double_but_crash_first, [], 2) == []


def test_a_task_whose_worker_dies_runs_again(tmp_path, caplog):
    ticks = []
    tasks = [(None, 1), (str(tmp_path / 'crashed'), 2), (None, 3)]
    with caplog.at_level(logging.WARNING):
        got = run_tasks(_double_but_crash_first, tasks, 2, tick=lambda: ticks.append(1),
                        describe=lambda t: f'task {t[1]}')
    assert got == [2, 4, 6]
    assert (tmp_path / 'crashed').exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f'task 2: its worker process died (exit code {-signal.SIGSEGV}); '
                        'running it again'], warnings
    assert ticks


def test_a_task_that_always_crashes_ends_in_one_line():
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        run_tasks(_always_crash, ['x'], 1, retries=1, describe=lambda t: f'worlds {t}')
    assert str(err.value) == ('worlds x: its worker process died 2 times (last exit code '
                              f'{-signal.SIGSEGV}); giving up')
    assert time.monotonic() - t0 < 20


def test_a_tasks_exception_reaches_the_caller_and_stops_the_others():
    t0 = time.monotonic()
    with pytest.raises(ValueError, match='task 3 is bad'):
        run_tasks(_refuse, [1, 2, 3], 3)
    assert time.monotonic() - t0 < 20
