"""Focusing a microscope with the score: autofocus, focus + stigmation, live scoring and the microscope adapters.
May import ``io``, ``scoring`` and the shared helpers (the fibsem demo microscope also ``simulate``); never training.
"""
