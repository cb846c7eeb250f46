"""``dmn-localizer demo``: the end-to-end demo."""
from dmn_localizer.commands._placeholder import not_implemented

HELP = 'Generate an unseen world, map it, localize in it and print a summary.'


def add_arguments(parser):
    parser.add_argument('rest', nargs='*', help='arguments (the command is not available yet)')


def run(args):
    return not_implemented('demo')
