"""``dmn-localizer bench``: benchmark observation-model and filter speed and memory."""
from dmn_localizer.commands._placeholder import not_implemented

HELP = 'Benchmark observation-model and filter speed and memory.'


def add_arguments(parser):
    parser.add_argument('rest', nargs='*', help='arguments (the command is not available yet)')


def run(args):
    return not_implemented('bench')
