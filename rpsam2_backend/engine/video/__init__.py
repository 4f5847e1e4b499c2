"""SAM2's video predictor for propagating a frame's masks to its neighbours.

``frames`` (sam2 preprocessing, one frame at a time), ``predictor`` (sam2 1.1.0's video predictor
with the predicted IoU kept, one tracking step, bounded state), ``tracker`` (``VideoEngine``:
seed, propagate forward/backward, confidence, stop on drift; one shared engine per process).
"""
