"""The paper's Fig. 4 experiments as functions: the pseudo-label study (4a) and the ablation (4b)."""
