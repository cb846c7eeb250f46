"""Observation-update benchmark: speed, FLOP rate and memory of the reference and fast paths.

Pure torch (no rclpy). :func:`run_benchmark` is what ``dmn-localizer bench`` runs. One concept
per module:

* :mod:`~dmn_localizer.bench.plan`: the configurations of a run (K and Nc sweeps, variants,
  options);
* :mod:`~dmn_localizer.bench.measure`: one configuration measured in a process (what is timed,
  ``latency_ms``, ``hz``, ``build_ms``, ``peak_mem_mb``) and the peak estimate
  (``peak_gflops``);
* :mod:`~dmn_localizer.bench.flops`: the analytic FLOP model (``gflop_per_update``);
* :mod:`~dmn_localizer.bench.workers`: the child processes the configurations run in;
* :mod:`~dmn_localizer.bench.report`: the rows (``gflops``, ``pct_of_peak``, the speed-up
  ratios), the printed table and the CPU targets;
* :mod:`~dmn_localizer.bench.run`: :func:`run_benchmark`, all of it.
"""
from dmn_localizer.bench.flops import FlopModel
from dmn_localizer.bench.measure import (describe_device, estimate_peak_gflops, load_bench_model,
                                         make_inputs, measure, MemoryProbe)
from dmn_localizer.bench.plan import BenchConfig, BenchPlan, make_plan
from dmn_localizer.bench.report import add_ratios, format_table, target_lines
from dmn_localizer.bench.run import run_benchmark
from dmn_localizer.bench.workers import child_main

__all__ = ['add_ratios', 'BenchConfig', 'BenchPlan', 'child_main', 'describe_device',
           'estimate_peak_gflops', 'FlopModel', 'format_table', 'load_bench_model',
           'make_inputs', 'make_plan', 'measure', 'MemoryProbe', 'run_benchmark',
           'target_lines']
