"""Real microscopes behind the autofocus search's ``Acquire`` protocol (:mod:`napari_sem_focus.autofocus`).

:mod:`.fibsem_sem` drives Thermo Fisher, TESCAN and fibsem's demo microscope through fibsem-os (the optional
``microscope`` extra; imported only when a microscope is used). May import the core (io, metadata, autofocus,
infer); never Qt, napari, the simulator or the training side.
"""
