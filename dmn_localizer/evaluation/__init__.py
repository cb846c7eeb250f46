"""The paper's evaluation protocol, baselines (closest context, uninformed) and plots."""
from dmn_localizer.evaluation.protocol import (EvalConfig, evaluate, likelihood_map,
                                               load_episodes, markdown_table, METHODS,
                                               run_method, summarise, sweep)

__all__ = ['EvalConfig', 'evaluate', 'likelihood_map', 'load_episodes', 'markdown_table',
           'METHODS', 'run_method', 'summarise', 'sweep']
