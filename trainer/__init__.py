"""Offline side of RP-SAM2: shift-block training, evaluation, the retrain job, SAM2-FT, datasets, CLIs.

Layers, each importing only the layers below it (an import-linter contract checks this)::

    cli                                  rpsam2-train / -eval / -retrain / -models / -pseudo-study / -ablation
                                         / -propagate
    retrain | studies                    the retrain job (RQ names it: trainer.retrain.retrain_job) | Fig. 4
                                         experiments (pseudo-label study, ablation)
    pseudo_labels | decoder_ft | video   pseudo-masks for click-only tasks | SAM2-FT | video propagation
                                         (trainer.video.job.propagate_job)
    eval                                 the paper's evaluation protocol, tables, heatmaps, reports
    shift                                candidates, compound loss, shift-block trainer and run loop
    accepted_labels                      a Label Studio project's accepted labels
    scores | prompts | feature_cache | datasets | augment
    io                                   atomic writes, CSV logs, training curves

``rpsam2_backend`` never imports this package; the backend reaches it only by dotted job name.
"""
