"""Reading SEM images: focus series from TIFF stacks, folders and arrays, vendor metadata, data bars, focus sweeps.

May import the shared helpers (errors, atomic writes) only: no torch, no scoring, no simulator.
"""
