"""Semantic-SAM: segment and recognize anything at any granularity (detectron2 implementation)."""
from .config import load_config

__all__ = ["load_config"]
