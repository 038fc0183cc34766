"""The interactive query decoder (registered as DECODER ``interactive_mask_dino``) and its parts."""
from .interactive_decoder import InteractiveDecoder
from .layers import MLP, DeformableDecoderLayer, DeformableTransformerDecoder, anchor_sine_embedding, inverse_sigmoid

__all__ = [
    "InteractiveDecoder",
    "MLP",
    "DeformableDecoderLayer",
    "DeformableTransformerDecoder",
    "anchor_sine_embedding",
    "inverse_sigmoid",
]
