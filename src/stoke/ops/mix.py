"""``MixUp`` and ``CutMix``: blend each image with a partner from its batch, and its label with the partner's.

Both are :class:`~stoke.ops.batch_transform.BatchTransform` s, given to ``Loader(batch_transforms=[...])``:
they need the whole batch, images and labels together. They replace the int label ``[B]`` under
``label`` by soft float32 targets ``[B, num_classes]`` whose rows sum to 1 (a float ``[B, num_classes]``
label, from an earlier mix, is mixed as it is). Images may be uint8 (mixed in float, rounded back) or
float, on any device and in any memory format; the batch keeps its dtype, device and format.

Per sample ``i`` (timm's "elem" mode: every sample its own lambda):

* **partner**: the samples are put in an order drawn from their own uniforms and each is paired with
  the next one in it (cyclically), so every sample is a partner exactly once and none is its own
  (unless the batch holds one sample, which is then left as it is, its label one-hot);
* **MixUp** (Zhang et al., 2018): ``lam ~ Beta(alpha, alpha)``; image ``lam * x_i + (1 - lam) * x_p``,
  target ``lam * onehot(y_i) + (1 - lam) * onehot(y_p)``;
* **CutMix** (Yun et al., 2019): ``lam ~ Beta(alpha, alpha)``; a box of ``sqrt(1 - lam)`` of the image's
  height and width (truncated to whole pixels), centred on a uniformly drawn pixel and clipped at the
  edges, is pasted from the partner; the target uses the area actually pasted, ``lam = 1 - box area /
  image area``.

The uniforms come from ``stoke.rng.sample_uniforms(seed, epoch, stream, indices)`` with a stream named
after the op and its keys, so a sample's lambda and box depend only on (seed, epoch, its index), and the
pairing only on the batch's indices: the same for any thread count, worker kind or resume. Beta draws
use the inverse CDF (``scipy.special.betaincinv``).

Example:
    >>> import numpy as np, torch
    >>> from stoke.ops.base import BatchContext
    >>> batch = {"image": torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "label": torch.tensor([0, 1, 2, 1])}
    >>> mixed = MixUp(alpha=0.4, num_classes=3).apply(batch, BatchContext(seed=0, epoch=0, indices=np.arange(4)))
    >>> mixed["label"].shape, mixed["label"].dtype, torch.allclose(mixed["label"].sum(1), torch.ones(4))
    (torch.Size([4, 3]), torch.float32, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.extras import require
from stoke.ops.base import BatchContext
from stoke.ops.batch_transform import BatchTransform
from stoke.ops.batched import keep_format
from stoke.rng import sample_uniforms, stream_id


class _Mix(BatchTransform):
    """What MixUp and CutMix share: settings, pairing, lambda, label mixing."""

    draws = 2

    def __init__(self, alpha: float, num_classes: int, image: str = "image", label: str = "label") -> None:
        if not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ConfigError(f"{type(self).__name__} alpha must be a positive number, got {alpha!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"{type(self).__name__} num_classes must be a positive integer, got {num_classes!r}")
        require("scipy.special", extra="mix", what=f"{type(self).__name__}'s Beta draws")  # now, not at the first batch
        self.alpha = float(alpha)
        self.num_classes = num_classes
        self.image = image
        self.label = label
        self._stream = stream_id("mix", type(self).__name__, image, label)

    def needs(self) -> tuple[str, ...]:
        return (self.image, self.label)

    def uniforms(self, context: BatchContext) -> np.ndarray:
        """``[B, draws]`` uniforms of the batch's samples."""
        return sample_uniforms(context.seed, context.epoch, self._stream, context.indices, self.draws)

    def partners(self, uniforms: np.ndarray) -> np.ndarray:
        """Each row's partner row: the next one in the order of the first uniform (cyclically)."""
        order = np.argsort(uniforms[:, 0], kind="stable")
        partner = np.empty_like(order)
        partner[order] = np.roll(order, -1)
        return partner

    def lambdas(self, uniforms: np.ndarray) -> np.ndarray:
        """Each row's ``Beta(alpha, alpha)`` draw, by the inverse CDF of its second uniform."""
        from scipy.special import betaincinv  # there: the constructor required it

        return np.asarray(betaincinv(self.alpha, self.alpha, uniforms[:, 1]), dtype=np.float64)

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [key for key in self.needs() if key not in batch]
        if missing:
            raise ConfigError(
                f"{self!r} needs the batch key {missing[0]!r}; the batch has {', '.join(batch)}: name its keys with "
                f"image= and label="
            )
        images, labels = batch[self.image], batch[self.label]
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ConfigError(f"{self!r} mixes an image batch [B, C, H, W] under {self.image!r}, got {got}")
        return images, labels

    def _targets(self, labels: torch.Tensor, partner: torch.Tensor, lam: np.ndarray) -> torch.Tensor:
        """Soft targets ``[B, num_classes]``: ``lam`` of each row's own label, the rest of its partner's."""
        if labels.dtype.is_floating_point and labels.ndim == 2 and labels.shape[1] == self.num_classes:
            own = labels.to(torch.float32)
        elif not labels.dtype.is_floating_point and labels.ndim == 1:
            low, high = (int(labels.min()), int(labels.max())) if labels.numel() else (0, 0)
            if low < 0 or high >= self.num_classes:
                bad = low if low < 0 else high
                raise ConfigError(
                    f"{self!r} got the label {bad} under {self.label!r}, outside 0..{self.num_classes - 1}; "
                    f"set num_classes to the number of classes"
                )
            own = torch.nn.functional.one_hot(labels.long(), self.num_classes).to(torch.float32)
        else:
            raise ConfigError(
                f"{self!r} mixes int labels [B] or float targets [B, {self.num_classes}] under {self.label!r}, "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        weight = torch.as_tensor(lam, dtype=torch.float32).to(own.device).view(-1, 1)
        return own * weight + own[partner.to(own.device)] * (1 - weight)


class MixUp(_Mix):
    """Blend each image with its partner by ``lam ~ Beta(alpha, alpha)``; labels likewise (module docstring)."""

    draws = 2

    def apply(self, batch: dict[str, Any], context: BatchContext) -> dict[str, Any]:
        images, labels = self._inputs(batch)
        uniforms = self.uniforms(context)
        partner = torch.as_tensor(self.partners(uniforms))
        lam = self.lambdas(uniforms)
        weight = torch.as_tensor(lam, dtype=torch.float32).to(images.device).view(-1, 1, 1, 1)
        pixels = images.to(torch.float32)
        mixed = pixels * weight + pixels[partner.to(images.device)] * (1 - weight)
        if images.dtype == torch.uint8:
            mixed = mixed.round_().clamp_(0, 255)
        out = keep_format(mixed.to(images.dtype), images)
        return {**batch, self.image: out, self.label: self._targets(labels, partner, lam)}


class CutMix(_Mix):
    """Paste a box of each image's partner into it; labels by the pasted area (module docstring)."""

    draws = 4

    def boxes(self, uniforms: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``[B, 4]`` int64 boxes (top, left, bottom, right), clipped, and each row's lambda: the share of
        its own pixels that is left."""
        side = np.sqrt(1.0 - self.lambdas(uniforms))
        box_height, box_width = (height * side).astype(np.int64), (width * side).astype(np.int64)
        center_y = np.minimum((uniforms[:, 2] * height).astype(np.int64), height - 1)
        center_x = np.minimum((uniforms[:, 3] * width).astype(np.int64), width - 1)
        top, left = center_y - box_height // 2, center_x - box_width // 2
        boxes = np.stack(
            (
                np.clip(top, 0, height),
                np.clip(left, 0, width),
                np.clip(top + box_height, 0, height),
                np.clip(left + box_width, 0, width),
            ),
            axis=1,
        )
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes, 1.0 - area / float(height * width)

    def apply(self, batch: dict[str, Any], context: BatchContext) -> dict[str, Any]:
        images, labels = self._inputs(batch)
        count, _, height, width = images.shape
        uniforms = self.uniforms(context)
        partner = torch.as_tensor(self.partners(uniforms))
        boxes, lam = self.boxes(uniforms, height, width)
        top, left, bottom, right = torch.as_tensor(boxes).to(images.device).view(count, 4, 1).unbind(1)
        rows = torch.arange(height, device=images.device)
        columns = torch.arange(width, device=images.device)
        inside = ((rows >= top) & (rows < bottom)).unsqueeze(-1) & ((columns >= left) & (columns < right)).unsqueeze(1)
        out = keep_format(torch.where(inside.unsqueeze(1), images[partner.to(images.device)], images), images)
        return {**batch, self.image: out, self.label: self._targets(labels, partner, lam)}
