"""Shift-block training (paper §3.2, §2.2, §2.4), from the bottom up.

- ``candidates``: the candidate set G of an object (grid points whose single click scores best).
- ``losses``: the compound loss α·Dice + β·Dist + γ·Out.
- ``config``: ``TrainConfig`` (hyper-parameters) and ``TrainResult`` (what a run returns).
- ``objects``: training/validation objects with their candidates, and the fixed validation prompts.
- ``trainer``: ``ShiftBlockTrainer``, one optimiser step and one validation.
- ``loop``: ``train_shift_block``, the run: data, loop, best checkpoint, resume, output directory.

Each module imports only those above it in this list (and the lower layers of ``trainer``).
"""
