"""Interactive prediction and automatic mask generation on top of a Semantic-SAM model."""
from .automatic_mask_generator import SemanticSamAutomaticMaskGenerator
from .interactive_predictor import SemanticSamPredictor
from .levels import ALL_LEVELS, levels_to_tokens
from .transforms import ResizeShortestSide, load_image, to_rgb_uint8

__all__ = [
    "ALL_LEVELS",
    "ResizeShortestSide",
    "SemanticSamAutomaticMaskGenerator",
    "SemanticSamPredictor",
    "levels_to_tokens",
    "load_image",
    "to_rgb_uint8",
]
