"""The ``dmn-localizer`` command line: one subcommand per pipeline stage.

Each subcommand lives in its own module under :mod:`dmn_localizer.commands` and exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported
only when their subcommand runs, so ``dmn-localizer --help`` is fast and a missing optional
dependency of one stage never breaks another.

Errors: bad arguments and :class:`~dmn_localizer.util.errors.UserError` give one line on stderr and
exit status 2; Ctrl-C exits 130; an unexpected exception prints one line (the traceback only
with ``--debug``) and exits 1.
"""
import argparse
import importlib
import logging
import os
import sys

from dmn_localizer import __version__
from dmn_localizer.util.errors import UserError
from dmn_localizer.util.allocator import keep_freed_memory

# subcommand -> module under dmn_localizer.commands
COMMANDS = {
    'simulate': 'simulate',
    'simulate-bag': 'simulate_bag',
    'dataset-from-bags': 'dataset_from_bags',
    'train': 'train',
    'finetune': 'finetune',
    'calibrate-lost': 'calibrate_lost',
    'eval': 'evaluate',
    'bench': 'bench',
    'replay': 'replay',
    'demo': 'demo',
    'run': 'run_nodes',
}

EXIT_USAGE = 2


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: ...``) and exit status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f'{self.prog}: error: {message} (see --help)\n')


def _load(name):
    return importlib.import_module(f'dmn_localizer.commands.{COMMANDS[name]}')


def build_parser():
    parser = _OneLineParser(
        prog='dmn-localizer',
        description='Visual localization against a learned view-embedding map (DMN).')
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    parser.add_argument('--debug', action='store_true',
                        help='show tracebacks and debug logging')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', parser_class=_OneLineParser)
    sub.required = True
    for name in COMMANDS:
        module = _load(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    keep_freed_memory()  # steady per-update latency in replay, eval and bench
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f'dmn-localizer {args.command}: error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f'dmn-localizer {args.command}: interrupted', file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line unless --debug
        if args.debug:
            raise
        print(f'dmn-localizer {args.command}: internal error: {type(exc).__name__}: {exc} '
              '(rerun with --debug for the traceback)', file=sys.stderr)
        return 1


def console_main():
    """Entry point of the ``dmn-localizer`` command and ``python -m dmn_localizer``.

    After an interrupt (status 130) the cleanup has run and the message is out, so the
    process exits at once: in about 2 of 9 runs of ``test_cli_interrupt``'s
    dataset-from-bags case the interpreter's shutdown still ended the process by SIGINT
    (status -2) instead (cause not found; never seen since this exit).
    """
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == '__main__':
    sys.exit(console_main())
