"""Scoring focus: the network and its weights, the scoring modes and structure map, classic metrics, the focus curve
and the reports. May import ``io`` and the shared helpers; never the simulator, training or a microscope library.
"""
