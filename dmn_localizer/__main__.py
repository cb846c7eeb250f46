"""``python -m dmn_localizer`` is the ``dmn-localizer`` CLI."""
import sys

from dmn_localizer.cli import console_main

sys.exit(console_main())
