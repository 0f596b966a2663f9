"""napari reader: SEM images, TIFF stacks and folders of frames, through the core :func:`read_series`.

Returns one image layer per series. Frames load lazily (a dask array over :meth:`FocusSeries.raw_frame`), the
layer ``scale`` is the pixel size in nm when known, and ``layer.metadata`` carries the vendor metadata, the
working distance of each frame and the data-bar crop (``metadata["sem_focus"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .io.series import IMAGE_SUFFIXES, list_frame_files


def get_reader(path: str | list[str]) -> Any:
    """npe2 reader hook: a reader function for SEM images/series, or None when we cannot read ``path``."""
    paths = [path] if isinstance(path, str) else list(path)
    for p in map(Path, paths):
        if p.is_dir():
            if not list_frame_files(p):
                return None
        elif p.suffix.lower() not in IMAGE_SUFFIXES:
            return None
    return read_layers


def series_layer_data(series: Any) -> tuple[Any, dict[str, Any], str]:
    """One napari layer-data tuple for a :class:`FocusSeries`: a lazy dask stack of its raw frames, or for frames
    above 64 Mpx a multiscale pyramid read band by band (:mod:`napari_sem_focus.io.lazy`): never loaded whole."""
    import numpy as np

    from .io.lazy import lazy_pyramid, lazy_stack

    data = lazy_pyramid(series) if series.is_large else lazy_stack(series)
    name = Path(series.source).name or str(series.source)
    frames = len(series)
    pixel_nm = series.pixel_size_nm
    scale = (pixel_nm, pixel_nm) if pixel_nm else (1.0, 1.0)
    if frames > 1:
        scale = (1.0, *scale)
    offset, white = series.intensity_map
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": scale,
        "contrast_limits": [offset, offset + white] if np.issubdtype(series.dtype, np.integer) else None,
        "metadata": {"sem_focus": series.describe(), "focus_series": series},
        "multiscale": True if series.is_large else None,
    }
    if pixel_nm:
        kwargs["units"] = ("pixel", "nm", "nm") if frames > 1 else ("nm", "nm")
    return data, {k: v for k, v in kwargs.items() if v is not None}, "image"


def read_layers(path: str | list[str]) -> list[tuple[Any, dict[str, Any], str]]:
    """Read ``path`` (file, folder, or list of files forming one series) into one image layer."""
    from .errors import MixedFrameSizesError
    from .io.series import read_series

    source: Any = path if isinstance(path, str) else [Path(p) for p in path]
    if isinstance(source, list) and len(source) == 1:
        source = source[0]
    try:
        series = read_series(source)
    except MixedFrameSizesError:
        # frames of slightly different sizes (e.g. a hand-saved series): open them centre-cropped, and say so
        series = read_series(source, common_crop=True)
        from napari.utils.notifications import show_warning

        show_warning(f"{Path(str(source)).name}: {series.notes[-1]}")
    return [series_layer_data(series)]
