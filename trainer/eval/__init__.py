"""The paper's evaluation (§3.3, Table 1, Table 2, Fig. 1/5 heatmaps), from the bottom up.

- ``protocol``: per-seed-first aggregation into tables, paired tests, ``mean±std`` formatting.
- ``results``: what an evaluation produces (``ScoreRow``, ``TableSpec``, ``EvaluationResult``, ...).
- ``config``: ``EvalConfig`` (seeds, tables, heatmaps, ...) and the checks of its knobs.
- ``methods``: the compared methods (``MethodSpec``) and how they decode (``MethodRunner``,
  ``DecoderState``).
- ``heatmaps``: Dice of a single click at every grid point of an object, drawn over it.
- ``report``: ``scores.csv``, ``summary.json``, ``report.md``.
- ``run``: ``evaluate``, the loop over images that ties them together.

Each module imports only those above it in this list (``heatmaps`` and ``report`` not each
other), and the lower layers of ``trainer``.
"""
