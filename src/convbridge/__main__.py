"""``python -m convbridge`` runs the ``convbridge`` command."""

from convbridge.cli import main

main(prog_name="convbridge")
