"""What happens to samples and batches: ``stoke.ops.<Name>``.

Image decoding needs no op: the Loader decodes every image field. Sample ops (crop, resize, flip) are
fused into one pass per image; pixel ops (``Map`` of the user's function) then change each image; batch
ops (normalize, device moves) run on whole tensors. Image augmentations (rotation, colour jitter, grayscale,
blur, cutout) are pixel ops that also run batched on a device; MixUp and CutMix are batch transforms
(``Loader(batch_transforms=...)``); docs/augmentation.md. ``Features`` stacks a table's columns into one
float32 matrix; ``ToDtype`` delivers a field in another dtype than the default. Sample ops placed after
``ToDevice`` crop, resize and flip the whole batch there (``GeometryOnBatch``, ``render_batch``); which
op runs where is decided in one place, ``stoke.ops.placement``. Text ops (deletion, swap, insertion,
synonym replacement) change the words of a text field, per sample.
"""

from stoke.ops.base import BatchContext, BatchOp, Geometry, Op, PixelOp, SampleOp
from stoke.ops.batch_transform import BatchTransform
from stoke.ops.batched import BatchablePixelOp
from stoke.ops.blur import GaussianBlur
from stoke.ops.color import ColorJitter
from stoke.ops.crop import CenterCrop, RandomResizedCrop
from stoke.ops.cutout import Cutout
from stoke.ops.device import ToDevice
from stoke.ops.dtype import ToDtype
from stoke.ops.features import Features
from stoke.ops.flip import RandomHorizontalFlip
from stoke.ops.geometry_batch import GeometryOnBatch, render_batch
from stoke.ops.grayscale import Grayscale, RandomGrayscale
from stoke.ops.map import Map
from stoke.ops.mix import CutMix, MixUp
from stoke.ops.normalize import Normalize
from stoke.ops.resize import Resize
from stoke.ops.rotate import RandomRotation
from stoke.ops.scale import MinMaxScale, Standardize
from stoke.ops.text import RandomDeletion, RandomInsertion, RandomSwap, SynonymReplacement, TextOp

__all__ = [
    "BatchContext",
    "BatchOp",
    "BatchTransform",
    "BatchablePixelOp",
    "CenterCrop",
    "ColorJitter",
    "CutMix",
    "Cutout",
    "Features",
    "GaussianBlur",
    "Geometry",
    "GeometryOnBatch",
    "Grayscale",
    "Map",
    "MinMaxScale",
    "MixUp",
    "Normalize",
    "Op",
    "PixelOp",
    "RandomDeletion",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomInsertion",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomSwap",
    "Resize",
    "SampleOp",
    "Standardize",
    "SynonymReplacement",
    "TextOp",
    "ToDevice",
    "ToDtype",
    "render_batch",
]
