"""Files the trainer writes: atomic writes, CSV logs, training curves.

The bottom layer of ``trainer``: it imports nothing else from the package, so every other module
may use it.
"""
