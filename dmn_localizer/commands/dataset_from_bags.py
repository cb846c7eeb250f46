"""``dmn-localizer dataset-from-bags``: recorded bags to the dataset format."""
from dmn_localizer.commands._placeholder import not_implemented

HELP = 'Turn recorded bags (image + pose) into the dataset format.'


def add_arguments(parser):
    parser.add_argument('rest', nargs='*', help='arguments (the command is not available yet)')


def run(args):
    return not_implemented('dataset-from-bags')
