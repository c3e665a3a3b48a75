"""Sweeps on Optuna: a TOML search space (`space`), the study and its trials (`study`), the
HTML report (`report`), and the extra worker processes (`worker`)."""
