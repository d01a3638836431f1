"""The benchmark suite of issue 12, as a script: ``python benchmarks/run.py [options]`` is ``convbridge bench
[options]`` (see ``--help`` and benchmarks/README.md). The runner itself is :mod:`convbridge.bench`."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from convbridge.__main__ import main  # takes over Ctrl-C first, as the convbridge command does

    sys.argv[1:1] = ["bench"]
    main()
