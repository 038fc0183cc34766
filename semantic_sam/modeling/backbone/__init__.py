"""Backbones (registered as BACKBONE ``swin``)."""
from .swin import D2SwinTransformer, SwinTransformer, build_swin_backbone

__all__ = ["D2SwinTransformer", "SwinTransformer", "build_swin_backbone"]
