"""Training the scoring network: datasets, the training loop, few-label adaptation, evaluation and the label store.
May import ``io``, ``scoring``, ``simulate`` and the shared helpers; never ``focusing``, ``batch`` or the front ends.
"""
