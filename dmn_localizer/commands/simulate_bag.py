"""``dmn-localizer simulate-bag``: record bags of a robot in a simulated world."""
from dmn_localizer.commands._placeholder import not_implemented

HELP = 'Record a ROS 2 bag of a robot driving through a simulated world.'


def add_arguments(parser):
    parser.add_argument('rest', nargs='*', help='arguments (the command is not available yet)')


def run(args):
    return not_implemented('simulate-bag')
