"""``dmn-localizer simulate``: render simulated worlds into a sharded episode dataset."""
from dmn_localizer.commands._placeholder import not_implemented

HELP = 'Render simulated worlds into a sharded episode dataset.'


def add_arguments(parser):
    parser.add_argument('rest', nargs='*', help='arguments (the command is not available yet)')


def run(args):
    return not_implemented('simulate')
