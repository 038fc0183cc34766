"""Dataset registration and dataset mappers (detectron2 side of the data pipeline).

Nothing is registered at import time: call the ``register_*`` functions (for SA-1B,
:func:`datasets.register_sa1b.register_all_sa1b`) before building a data loader.
"""
