"""Baselines that share strbench's SDE math: IR-SDE and RePaint* (registered in strbench.sample.SAMPLERS)."""
