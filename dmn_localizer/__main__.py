"""``python -m dmn_localizer`` is the ``dmn-localizer`` CLI."""
import sys

from dmn_localizer.cli import main

sys.exit(main())
