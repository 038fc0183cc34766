"""Semantic-SAM: segment and recognize anything at any granularity (detectron2 implementation).

    from semantic_sam import load_config, build_model, load_checkpoint, SemanticSamPredictor
    cfg = load_config("configs/semantic_sam_only_sa-1b_swinT.yaml")
    model = build_model(cfg).eval()
    load_checkpoint(model, "swint_only_sam_many2many.pth")
    predictor = SemanticSamPredictor(model)
"""
from .build import build_model
from .checkpoint import load_checkpoint
from .config import load_config
from .predictor import SemanticSamAutomaticMaskGenerator, SemanticSamPredictor

__all__ = [
    "build_model",
    "load_checkpoint",
    "load_config",
    "SemanticSamAutomaticMaskGenerator",
    "SemanticSamPredictor",
]
