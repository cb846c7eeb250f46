"""The paper's evaluation protocol, its baselines and ablations, and plots."""
from dmn_localizer.evaluation.protocol import (EvalConfig, evaluate, likelihood_map,
                                               load_episodes, markdown_table, METHODS,
                                               run_method, summarise, sweep)

__all__ = ['EvalConfig', 'evaluate', 'likelihood_map', 'load_episodes', 'markdown_table',
           'METHODS', 'run_method', 'summarise', 'sweep']
