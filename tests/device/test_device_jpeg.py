"""Decoding JPEGs on the device (stoke.device.jpeg): the fallback here, and the device path on the CPU.

No GPU is needed: the device path runs with a CPU decoder (simplejpeg, full size, accurate) in place of
nvJPEG, and is compared with the CPU path (``decode="cpu"``, accurate decode) batch by batch.
"""

from __future__ import annotations

import io
import logging
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

import stoke
from helpers import encode, photo
from stoke.device import jpeg
from stoke.device.jpeg import CompressedImageStage, nvjpeg_unavailable, orient_chw
from stoke.errors import ConfigError, SampleError
from stoke.format.fields import image_codec as codec
from stoke.ops import ColorJitter, Normalize, RandomHorizontalFlip, RandomResizedCrop, ToDevice
from stoke.ops.base import Geometry
from stoke.ops.geometry_batch import render_batch
from stoke.pipeline.image import ImageStage
from stoke.pipeline.reader import reader_for

# Resampling in float on the batch against OpenCV's fixed point: a grey level or two on a few pixels.
MAX_LEVELS = 2
CROP = [RandomResizedCrop(24, scale=(0.25, 1.0)), RandomHorizontalFlip()]
BOTH = {"image": CROP, "gray": [RandomResizedCrop(16), RandomHorizontalFlip()]}


def cpu_decoder(payloads: list[torch.Tensor], mode: str, device: torch.device) -> list[torch.Tensor]:
    """nvJPEG's stand-in: a full-size, accurate libjpeg-turbo decode of each payload, CHW on ``device``."""
    colorspace = "RGB" if mode == "RGB" else "GRAY"
    return [
        torch.from_numpy(simplejpeg.decode_jpeg(payload.numpy().tobytes(), colorspace=colorspace))
        .permute(2, 0, 1)
        .to(device)
        for payload in payloads
    ]


def rotated_jpeg(array: np.ndarray, orientation: int) -> bytes:
    """``array`` stored as a JPEG whose EXIF orientation is ``orientation``."""
    exif = Image.Exif()
    exif[codec.EXIF_ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory: pytest.TempPathFactory) -> stoke.Dataset:
    """18 kept JPEGs of varying, odd sizes (all under 48 px, so the CPU path never DCT-scales), two with an
    EXIF rotation, one PNG among them; and a grayscale field."""
    records = []
    for index in range(18):
        height, width = 25 + (index * 7) % 22, 23 + (index * 5) % 24
        image = photo(height, width, seed=index)
        if index == 4:
            data = rotated_jpeg(image, 6)
        elif index == 11:
            data = rotated_jpeg(image, 3)
        elif index == 9:
            data = encode(image, "PNG")
        else:
            data = encode(image, quality=90)
        gray = encode(photo(height + 2, width, seed=50 + index)[..., 0], quality=90)
        records.append({"image": data, "gray": gray, "label": index % 3})
    root = tmp_path_factory.mktemp("jpegs")
    fields = {"image": stoke.ImageField(), "gray": stoke.ImageField(mode="L"), "label": stoke.IntField()}
    stoke.pack(records, root / "ds", fields=fields, shard_items=5, progress=False)
    return stoke.open(root / "ds")


@pytest.fixture
def device_path(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """nvJPEG "available", decoding with :func:`cpu_decoder`; returns the number of JPEGs per decoder call."""
    calls: list[int] = []

    def counting(payloads, mode, device):
        calls.append(len(payloads))
        return cpu_decoder(payloads, mode, device)

    monkeypatch.setattr(jpeg, "nvjpeg_unavailable", lambda device: None)
    monkeypatch.setattr(jpeg, "torchvision_decoder", counting)
    return calls


def load(dataset, decode: str, transforms=None, **options) -> list[dict]:
    transforms = transforms or BOTH
    settings = {"batch_size": 5, "seed": 7, "num_threads": 2, "fast_decode": False, **options}
    with stoke.Loader(dataset, transforms=transforms, decode=decode, **settings) as loader:
        return list(loader)


def assert_batches_match(device: list[dict], cpu: list[dict], keys=("image", "gray")) -> None:
    assert len(device) == len(cpu) > 1
    differences = []
    for on_device, on_cpu in zip(device, cpu):
        assert torch.equal(on_device["index"], on_cpu["index"]) and torch.equal(on_device["label"], on_cpu["label"])
        for key in keys:
            assert on_device[key].shape == on_cpu[key].shape and on_device[key].dtype == on_cpu[key].dtype
            differences.append((on_device[key].int() - on_cpu[key].int()).abs().flatten())
    difference = torch.cat(differences)
    assert difference.max() <= MAX_LEVELS and difference.median() == 0, (difference.max(), difference.float().mean())


# ---- the device path, with a CPU decoder ----------------------------------------------------------------
@pytest.mark.parametrize("workers", ["thread", "process"])
def test_the_device_path_crops_the_same_boxes_as_the_cpu_path(jpegs, device_path, workers):
    device = load(jpegs, "device", device="cpu", workers=workers)
    assert device_path and max(device_path) > 1  # one decoder call per batch, never one per image
    assert len(device_path) == 2 * len(device)  # image and gray, once per batch each
    assert_batches_match(device, load(jpegs, "cpu", device="cpu"))


def test_the_stage_is_the_device_one_and_keeps_only_bytes_per_sample(jpegs, device_path):
    loader = stoke.Loader(
        jpegs, batch_size=4, transforms={"image": CROP}, decode="device", device="cpu", fields=["image"]
    )
    (stage,) = loader._stages
    assert isinstance(stage, CompressedImageStage)
    largest = max(len(jpegs.read_fields(index)[0]) for index in range(len(jpegs)))
    assert stage.capacity == largest - 12  # the largest record less its header: no slot too small, none larger
    loader.close()


def test_later_ops_and_channels_last_match_the_cpu_path(jpegs, device_path):
    ops = [*CROP, ColorJitter(0.3, 0.3), ToDevice("cpu"), Normalize([0.5] * 3, [0.25] * 3)]
    options = {"transforms": {"image": ops}, "fields": ["image", "label"], "channels_last": True}
    device, cpu = load(jpegs, "device", **options), load(jpegs, "cpu", **options)
    for batch in device:
        assert batch["image"].dtype == torch.float32
        assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    scaled = [{**b, "image": (b["image"] * 0.25 + 0.5) * 255} for b in device]  # back to grey levels
    reference = [{**b, "image": (b["image"] * 0.25 + 0.5) * 255} for b in cpu]
    for on_device, on_cpu in zip(scaled, reference):
        difference = (on_device["image"] - on_cpu["image"]).abs()
        assert difference.max() <= MAX_LEVELS + 1.01 and difference.median() < 0.01  # + the jitter's rounding


def test_the_render_of_a_small_image_on_a_large_canvas_is_the_render_of_the_image(jpegs):
    """Images sit at the top-left of a zero canvas: a crop past their edge reads zeros, as on the CPU."""
    image = torch.from_numpy(photo(13, 17, seed=3)).permute(2, 0, 1)
    canvas = torch.zeros((1, 3, 40, 31), dtype=torch.uint8)
    canvas[0, :, :13, :17] = image
    for box in [(-4, -3, 20, 25), (5, 6, 14, 14), (0, 0, 13, 17)]:
        geometry = Geometry.identity(13, 17).crop(*box).resize(9, 11).flip_horizontal()
        alone = render_batch(image[None], [geometry])
        on_canvas = render_batch(canvas, [geometry])
        assert (alone.int() - on_canvas.int()).abs().max() <= 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_on_the_device_is_the_cpu_orientation(orientation):
    array = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    on_cpu = codec.orient(array, orientation)
    on_device = orient_chw(torch.from_numpy(array).permute(2, 0, 1), orientation).permute(1, 2, 0)
    assert np.array_equal(on_device.numpy(), on_cpu)


def test_a_jpeg_the_device_refuses_is_decoded_on_the_cpu(jpegs, monkeypatch):
    refused = len(jpegs.read_fields(3)[0]) - 12

    def picky(payloads, mode, device):
        if any(len(payload) == refused for payload in payloads):
            raise RuntimeError("nvjpeg: unsupported JPEG")
        return cpu_decoder(payloads, mode, device)

    monkeypatch.setattr(jpeg, "nvjpeg_unavailable", lambda device: None)
    monkeypatch.setattr(jpeg, "torchvision_decoder", picky)
    options = {"transforms": {"image": CROP}, "fields": ["image", "label"], "device": "cpu"}
    assert_batches_match(load(jpegs, "device", **options), load(jpegs, "cpu", **options), keys=("image",))


def damaged_copy(dataset: stoke.Dataset, index: int, target: Path) -> stoke.Dataset:
    """A copy of ``dataset`` whose sample ``index`` has its JPEG's scan data overwritten after packing."""
    shutil.copytree(dataset.root, target)
    payload = bytes(dataset.read_fields(index)[0])
    scan = payload.index(b"\xff\xda") + 20
    shard = target / dataset.shard_of(index).file
    data = bytearray(shard.read_bytes())
    at = data.index(payload) + scan
    data[at : at + 40] = b"\xff\x01" * 20
    shard.write_bytes(bytes(data))
    return stoke.open(target)


def test_a_jpeg_that_decodes_nowhere_names_its_sample(jpegs, device_path, tmp_path):
    damaged = damaged_copy(jpegs, 6, tmp_path / "damaged")
    options = {"transforms": {"image": CROP}, "fields": ["image"], "device": "cpu", "shuffle": False}
    with pytest.raises(
        SampleError, match=r"sample 6: image 'image' does not decode on cpu .* nor on the CPU"
    ) as caught:
        load(damaged, "device", verify="never", on_error="skip", max_bad_fraction=1.0, **options)
    assert caught.value.index == 6
    # The checksum check runs in the workers, under the Loader's policy: the sample is skipped as on the CPU.
    with stoke.Loader(damaged, batch_size=5, decode="device", verify="once", max_bad_fraction=1.0, **options) as loader:
        indices = torch.cat([batch["index"] for batch in loader]).tolist()
    assert 6 not in indices and len(indices) == len(jpegs) - 1
    assert [record["index"] for record in loader.quarantine] == [6]


def test_a_record_larger_than_the_buffer_fails_as_a_sample_never_truncated(jpegs, device_path, monkeypatch):
    sizes = [len(jpegs.read_fields(index)[0]) if index != 9 else 0 for index in range(len(jpegs))]  # 9: the PNG
    limit = sorted(sizes)[-3]  # the two largest JPEG records do not fit; the PNG decodes on the CPU anyway
    monkeypatch.setattr(jpeg, "largest_record", lambda dataset, name: limit)
    options = {"transforms": {"image": CROP}, "fields": ["image"], "device": "cpu"}
    with stoke.Loader(jpegs, batch_size=5, decode="device", max_bad_fraction=1.0, **options) as loader:
        indices = torch.cat([batch["index"] for batch in loader]).tolist()
    too_large = {index for index, size in enumerate(sizes) if size > limit}
    assert len(too_large) == 2 and set(indices) == set(range(len(jpegs))) - too_large
    assert {record["index"] for record in loader.quarantine} == too_large
    assert all("more than the" in record["reason"] for record in loader.quarantine)
    # Under "replace" each stand-in is produced into the failed row, through the same stage.
    with stoke.Loader(
        jpegs, batch_size=5, decode="device", seed=7, on_error="replace", max_bad_fraction=1.0, **options
    ) as loader:
        replaced = list(loader)
    assert [len(batch["index"]) for batch in replaced] == [5, 5, 5, 3]
    assert not too_large & set(torch.cat([batch["index"] for batch in replaced]).tolist())
    stand_ins = {index: image for batch in replaced for index, image in zip(batch["index"].tolist(), batch["image"])}
    reference = {
        index: image
        for batch in load(jpegs, "cpu", **options)
        for index, image in zip(batch["index"].tolist(), batch["image"])
    }
    assert all((stand_ins[index].int() - reference[index].int()).abs().max() <= MAX_LEVELS for index in stand_ins)


# ---- falling back --------------------------------------------------------------------------------------
def test_without_nvjpeg_device_decoding_falls_back_with_one_warning_and_the_cpu_batches(jpegs, caplog):
    with caplog.at_level(logging.INFO, logger="stoke"):
        loader = stoke.Loader(jpegs, batch_size=5, seed=7, transforms=BOTH, decode="device")
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per image field: image and gray
    assert "no device is given" in warnings[0].getMessage() and "decoded on the CPU" in warnings[0].getMessage()
    assert all(isinstance(stage, ImageStage) for stage in loader._stages if stage.name in ("image", "gray"))
    with stoke.Loader(jpegs, batch_size=5, seed=7, transforms=BOTH) as cpu:
        expected = list(cpu)
    first = next(iter(loader))
    state = loader.state_dict()
    loader.close()
    resumed = stoke.Loader(jpegs, batch_size=5, seed=7, transforms=BOTH, decode="device")
    resumed.load_state_dict(state)
    with resumed:
        rest = list(resumed)
    for got, want in zip([first, *rest], expected, strict=True):
        assert all(torch.equal(got[key], want[key]) for key in ("index", "image", "gray", "label"))


def test_auto_on_the_cpu_decodes_on_the_cpu_silently(jpegs, caplog):
    with caplog.at_level(logging.DEBUG, logger="stoke"):
        loader = stoke.Loader(jpegs, batch_size=4, transforms=BOTH, decode="auto", device="cpu")
    assert not caplog.records
    assert all(isinstance(stage, ImageStage) for stage in loader._stages if stage.name in ("image", "gray"))
    loader.close()


def test_a_field_not_stored_as_jpeg_decodes_on_the_cpu_with_an_info_line(tmp_path, device_path, caplog):
    records = [{"image": photo(20, 22, seed=index)} for index in range(4)]
    stoke.pack(records, tmp_path / "ds", fields={"image": stoke.ImageField(encoding="png")}, progress=False)
    with caplog.at_level(logging.INFO, logger="stoke"):
        loader = stoke.Loader(stoke.open(tmp_path / "ds"), batch_size=2, decode="device", device="cpu")
    assert isinstance(loader._stages[0], ImageStage)
    (record,) = caplog.records
    assert record.levelno == logging.INFO and "stored as png, not JPEG" in record.getMessage()
    loader.close()


def test_a_per_image_op_or_a_live_dataset_keeps_the_field_on_the_cpu(jpegs, device_path, caplog):
    with caplog.at_level(logging.WARNING, logger="stoke"):
        mapped = stoke.Loader(
            jpegs,
            batch_size=2,
            decode="device",
            device="cpu",
            fields=["image"],
            transforms={"image": [*CROP, stoke.ops.Map(np.flipud)]},
        )
        live = stoke.Loader(
            [{"image": Image.fromarray(photo(10, 12))}] * 3, batch_size=2, decode="device", device="cpu"
        )
    assert isinstance(mapped._stages[0], ImageStage) and isinstance(live._stages[0], ImageStage)
    messages = [record.getMessage() for record in caplog.records]
    assert any("per-image op with no batched form" in message for message in messages)
    assert any("not packed" in message for message in messages)
    mapped.close()
    live.close()


def test_decode_takes_only_the_known_values(jpegs):
    with pytest.raises(ConfigError, match=r"decode must be 'cpu', 'device' or 'auto', got 'gpu'"):
        stoke.Loader(jpegs, batch_size=2, decode="gpu")


# ---- nvjpeg_unavailable --------------------------------------------------------------------------------
@pytest.fixture
def cuda_claimed(monkeypatch: pytest.MonkeyPatch):
    """torch says CUDA is available, so the check goes on to torchvision (the probe cache is emptied)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    jpeg._probe.cache_clear()
    yield monkeypatch
    jpeg._probe.cache_clear()


@pytest.mark.parametrize(
    ("device", "reason"),
    [
        (None, "no device is given"),
        ("cpu", "cpu is not a CUDA device"),
        ("not a device", "checking for nvJPEG failed"),
        (42, "checking for nvJPEG failed"),
        (object(), "checking for nvJPEG failed"),
    ],
)
def test_nvjpeg_unavailable_names_the_reason_and_never_raises(device, reason):
    assert reason in nvjpeg_unavailable(device)


def test_nvjpeg_unavailable_without_cuda_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA is not available" in nvjpeg_unavailable("cuda")


class BrokenTorchvision:
    """An import hook under which ``import torchvision`` raises what a torch/torchvision mismatch raises."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            raise RuntimeError("operator torchvision::nms does not exist")
        return None


def test_nvjpeg_unavailable_names_torchvisions_import_error(cuda_claimed):
    for name in [name for name in sys.modules if name.split(".")[0] == "torchvision"]:
        cuda_claimed.delitem(sys.modules, name)
    cuda_claimed.setattr(sys, "meta_path", [BrokenTorchvision(), *sys.meta_path])
    reason = nvjpeg_unavailable("cuda:0")
    assert "torchvision cannot be imported (RuntimeError: operator torchvision::nms does not exist)" in reason


def test_nvjpeg_unavailable_refuses_a_torchvision_without_cuda(cuda_claimed):
    fake = types.ModuleType("torchvision")
    fake.__version__ = "0.99.0+cpu"
    fake.version = types.SimpleNamespace(cuda=None)
    fake_io = types.ModuleType("torchvision.io")
    fake_io.decode_jpeg = lambda *args, **kwargs: None
    fake.io = fake_io
    cuda_claimed.setitem(sys.modules, "torchvision", fake)
    cuda_claimed.setitem(sys.modules, "torchvision.io", fake_io)
    assert "torchvision 0.99.0+cpu is a build without CUDA" in nvjpeg_unavailable("cuda")


def test_a_field_on_cuda_without_torchvision_warns_with_the_import_error(jpegs, cuda_claimed, caplog):
    cuda_claimed.setitem(sys.modules, "torchvision", None)  # import torchvision raises ImportError
    reader = reader_for(jpegs, ["image"], "never")
    stats = reader.field_stats("image")
    with caplog.at_level(logging.WARNING, logger="stoke"):
        stage = jpeg.image_stage("device", "image", CROP, reader, stats, torch.device("cuda"), False, True)
    (record,) = caplog.records
    assert "torchvision cannot be imported" in record.getMessage() and "decoded on the CPU" in record.getMessage()
    assert isinstance(stage, ImageStage)
