"""Parameter sweeps: grids, time folds, parallel runs over shared tapes, in- vs out-of-sample ranking."""
