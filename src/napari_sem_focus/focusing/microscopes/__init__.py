"""Real microscopes behind the autofocus search's ``Acquire`` protocol (:mod:`napari_sem_focus.focusing.autofocus`).

:mod:`.fibsem_sem` drives Thermo Fisher, TESCAN and fibsem's demo microscope through fibsem-os (the optional
``microscope`` extra; imported only when a microscope is used). May import ``io``, ``scoring`` and the rest of
``focusing``; never Qt, napari, the simulator or the training side. :mod:`.fibsem_demo` (tests, benchmarks and
``--manufacturer Demo``) is fibsem's demo microscope drawing its frames with the virtual SEM (``simulate``).
"""
