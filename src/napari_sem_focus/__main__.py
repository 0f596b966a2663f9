"""``python -m napari_sem_focus ...`` is ``sem-focus ...`` (for machines where the console script is not on PATH)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
