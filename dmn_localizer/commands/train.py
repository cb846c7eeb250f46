"""``dmn-localizer train``: train a DMN end to end through the particle filter."""
from dmn_localizer.commands._placeholder import not_implemented

HELP = 'Train a DMN end to end through the particle filter.'


def add_arguments(parser):
    parser.add_argument('rest', nargs='*', help='arguments (the command is not available yet)')


def run(args):
    return not_implemented('train')
