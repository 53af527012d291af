"""``python -m qlmio_opt.faces.cli``: the same as the ``qlmio-opt`` command."""

import sys

from qlmio_opt.faces.cli import main

sys.exit(main())
