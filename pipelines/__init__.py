"""Thin entry points, one per pipeline stage: what dvc.yaml and `ray job submit` run."""
