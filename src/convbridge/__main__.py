"""``python -m convbridge`` runs the ``convbridge`` command."""

from convbridge.cli import run

run()
