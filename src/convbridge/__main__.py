"""``python -m convbridge`` (and the ``convbridge`` script) run the ``convbridge`` command.

Ctrl-C is taken over first, before click and the rest are imported, so that an interrupt at
any moment ends in status 130 and one line.
"""

from convbridge import interrupts


def main() -> None:
    import sys

    interrupts.install()
    argv = sys.argv[1:]
    if "--format=json" in argv or any(a == "--format" and b == "json" for a, b in zip(argv, argv[1:])):
        interrupts.report_on_stdout(interrupts.INTERRUPTED_JSON)  # until the CLI has read its options
    from convbridge.cli import run

    run()


if __name__ == "__main__":
    main()
