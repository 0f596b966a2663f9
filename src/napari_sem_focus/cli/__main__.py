"""``python -m napari_sem_focus.cli ...`` is ``sem-focus ...``."""

import sys

from . import main

sys.exit(main())
