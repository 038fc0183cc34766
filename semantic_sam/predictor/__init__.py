"""Interactive prediction and automatic mask generation on top of a Semantic-SAM model."""
from ..utils.image_io import UnsupportedImageError, load_image, to_rgb_uint8
from .automatic_mask_generator import NoGenericQueriesError, SemanticSamAutomaticMaskGenerator
from .interactive_predictor import SemanticSamPredictor
from .labels import PART_SCORE_THRESH, MaskLabels, NoTextEncoderError, Vocabulary, default_vocabulary, label_text
from .levels import ALL_LEVELS, levels_to_tokens
from .model_interface import PromptableModel
from .transforms import DEFAULT_MAX_SIZE, MAX_ASPECT_RATIO, ResizeShortestSide

__all__ = [
    "ALL_LEVELS",
    "DEFAULT_MAX_SIZE",
    "MAX_ASPECT_RATIO",
    "PART_SCORE_THRESH",
    "MaskLabels",
    "NoGenericQueriesError",
    "NoTextEncoderError",
    "PromptableModel",
    "ResizeShortestSide",
    "SemanticSamAutomaticMaskGenerator",
    "SemanticSamPredictor",
    "UnsupportedImageError",
    "Vocabulary",
    "default_vocabulary",
    "label_text",
    "levels_to_tokens",
    "load_image",
    "to_rgb_uint8",
]
