"""``python -m kmodelpy``: the same as the ``kmodelpy`` command (see :mod:`kmodelpy.cli`)."""
import sys

from .cli import main

sys.exit(main())
