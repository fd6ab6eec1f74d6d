"""``python -m napari_softseg`` runs the ``softseg`` command line."""

import sys

from .cli import main

sys.exit(main())
