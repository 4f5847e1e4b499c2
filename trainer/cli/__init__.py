"""The trainer's command lines (console scripts in setup.cfg): the top layer of ``trainer``.

``rpsam2-train`` (``train``), ``rpsam2-eval`` (``eval``), ``rpsam2-retrain`` (``retrain``),
``rpsam2-models`` (``models``); ``common`` holds what they share.  Each imports its heavy
dependencies (torch, SAM2) inside functions, so ``--help`` and usage errors answer at once.
"""
