"""Helpers shared by the entry points (demo.py, train_net.py): visualization."""
