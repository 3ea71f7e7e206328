"""What happens to samples and batches: ``stoke.ops.<Name>``.

Image decoding needs no op: the Loader decodes every image field. Sample ops (crop, resize, flip) are
fused into one pass per image; pixel ops (``Map`` of the user's function) then change each image; batch
ops (normalize, device moves) run on whole tensors.
"""

from stoke.ops.base import BatchContext, BatchOp, Geometry, Op, PixelOp, SampleOp
from stoke.ops.crop import CenterCrop, RandomResizedCrop
from stoke.ops.device import ToDevice
from stoke.ops.flip import RandomHorizontalFlip
from stoke.ops.map import Map
from stoke.ops.normalize import Normalize
from stoke.ops.resize import Resize

__all__ = [
    "BatchContext",
    "BatchOp",
    "CenterCrop",
    "Geometry",
    "Map",
    "Normalize",
    "Op",
    "PixelOp",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "SampleOp",
    "ToDevice",
]
