"""Subcommands of the ``dmn-localizer`` CLI: each module has HELP, add_arguments, run."""
