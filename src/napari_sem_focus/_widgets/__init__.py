"""napari dock widgets: thin Qt layers over the core (every action is a core function)."""
