"""``dmn-localizer eval``: evaluate models the paper's way on held-out worlds."""
from dmn_localizer.commands._placeholder import not_implemented

HELP = "Evaluate models the paper's way on held-out worlds."


def add_arguments(parser):
    parser.add_argument('rest', nargs='*', help='arguments (the command is not available yet)')


def run(args):
    return not_implemented('eval')
