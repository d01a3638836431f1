"""``python -m convbridge`` (and the ``convbridge`` script) run the ``convbridge`` command.

Ctrl-C is taken over first, before click and the rest are imported, so that an interrupt at
any moment ends in status 130 and one line.
"""

from convbridge import interrupts


def main() -> None:
    interrupts.install()
    from convbridge.cli import run

    run()


if __name__ == "__main__":
    main()
