"""Model parts. Importing this package registers every part in the registries of ``registry.py``
(and the meta-architecture in detectron2's ``META_ARCH_REGISTRY``)."""
import importlib as _importlib
import pkgutil as _pkgutil

from . import registry
from .backbone import swin  # noqa: F401  (BACKBONE "swin")
from . import pixel_decoder as _pixel_decoders

for _m in _pkgutil.iter_modules(_pixel_decoders.__path__):  # PIXEL_DECODER "encoder_deform", ...
    _importlib.import_module(f"{_pixel_decoders.__name__}.{_m.name}")

from . import decoder  # noqa: E402,F401  (DECODER "interactive_mask_dino")
from . import head  # noqa: E402,F401  (HEAD "general_head")
from . import meta_arch  # noqa: E402,F401  (META_ARCH "interactive_mask_dino")
from .meta_arch import SemanticSAM  # noqa: E402

__all__ = ["SemanticSAM", "registry"]
