"""``python -m papy``: the ``papy`` command (see papy/cli.py and docs/cli.md)."""
import sys

from papy.cli import main

if __name__ == "__main__":
    sys.exit(main())
