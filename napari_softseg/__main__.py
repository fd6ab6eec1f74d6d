"""``python -m napari_softseg`` runs the ``softseg`` command line."""

import sys

from napari_softseg.cli import main

sys.exit(main())
