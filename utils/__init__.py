"""Helpers of the entry points: overlay drawing (``visualizer``), demo.py's web app (``demo_app``) and
its results and headless outputs (``demo_outputs``)."""
