"""Hydra config tree, packaged so `python -m ablate` finds it from any directory."""
