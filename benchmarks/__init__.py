"""Benchmarks of ncps_mlx against the reference ncps (PyTorch); see README.md."""
