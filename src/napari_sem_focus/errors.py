"""One exception family for everything a user can act on.

The CLI prints ``str(err)`` on one line and exits with status 2; the napari widgets show it as a notification.
Every message names the file (when there is one) and what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path


class SemFocusError(Exception):
    """Base class: a problem with the user's input or settings, explained in the message."""


class UnreadableImageError(SemFocusError):
    """A file is missing, truncated, corrupt, or not an image format we read."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read '{path}': {reason}")


class InvalidImageError(SemFocusError):
    """An image was read but cannot be scored (NaN/inf pixels, wrong number of dimensions, too small...)."""


class FrameTooLargeError(InvalidImageError):
    """A frame above 64 Mpx that cannot be read in parts (not a grey TIFF page in strips or tiles): refused before
    it is decoded, so that it never exhausts the memory (``io.image_files.WHOLE_DECODE_LIMIT_BYTES``)."""


class SeriesError(SemFocusError):
    """A set of frames cannot form one focus series (empty folder, mixed frame sizes...)."""


class MixedFrameSizesError(SeriesError):
    """The frames of a series differ in size; ``common_crop=True`` (CLI: ``--common-crop``) centre-crops them."""


class WeightsError(SemFocusError):
    """Model weights are missing, corrupt or do not match the architecture."""


class CancelledError(SemFocusError):
    """A long job (scoring, training) was cancelled by the user; nothing was changed."""
