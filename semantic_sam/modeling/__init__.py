"""Model parts. Importing this package registers every built-in part in the registries of
``registry.py`` (and the meta-architecture in detectron2's ``META_ARCH_REGISTRY``): each import
below names what its module registers."""
from . import registry
from .backbone import build_swin_backbone  # noqa: F401  (BACKBONE "swin")
from .decoder import InteractiveDecoder  # noqa: F401  (DECODER "interactive_mask_dino")
from .head import GeneralHead  # noqa: F401  (HEAD "general_head")
from .meta_arch import SemanticSAM  # META_ARCH "interactive_mask_dino", detectron2 "SemanticSAM"
from .pixel_decoder import build_encoder_deform  # noqa: F401  (PIXEL_DECODER "encoder_deform")

__all__ = ["SemanticSAM", "registry"]
