"""`python -m dltool ...`, and the script to give spark-submit: `spark-submit [options] $(python -m dltool.where) CMD ...`."""

import os
import sys

if __package__ in (None, ""):  # run as a file by spark-submit: import the package, not its modules
    # (with this folder on sys.path, dltool's modules would be importable as top-level names)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dltool.cli import main

main()
