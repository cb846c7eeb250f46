"""The one allowed placeholder: a subcommand whose issue has not landed yet exits 2."""
import sys


def not_implemented(command):
    print(f'dmn-localizer {command}: not implemented yet', file=sys.stderr)
    return 2
