"""Pixel decoders (registered as PIXEL_DECODER ``encoder_deform``)."""
from .encoder_deform import MSDeformAttnPixelDecoder, build_encoder_deform

__all__ = ["MSDeformAttnPixelDecoder", "build_encoder_deform"]
