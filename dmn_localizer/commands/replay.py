"""``dmn-localizer replay``: replay bags through the localizer and score it."""
from dmn_localizer.commands._placeholder import not_implemented

HELP = 'Replay bags through the localizer and score it.'


def add_arguments(parser):
    parser.add_argument('rest', nargs='*', help='arguments (the command is not available yet)')


def run(args):
    return not_implemented('replay')
