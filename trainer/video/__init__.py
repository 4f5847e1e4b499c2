"""Video: a submitted frame's masks propagated through its video with SAM2's video predictor.

``job`` (the propagation job, named ``trainer.video.job.propagate_job`` in core.names),
``predictions`` (seed masks from annotations, predictions for frames, what a new propagation
supersedes), ``folder`` (the same propagation on a folder of frame files, ``rpsam2-propagate``).
"""
