"""Scoring whole archives: resumable scoring of many files, on one machine or a Dask cluster, to CSV or Parquet.
May import ``io``, ``scoring`` and the shared helpers; never the simulator, training or ``focusing``.
"""
