"""``digits_cnn``: paper 000's MNIST CNN on scikit-learn's 8x8 digits (SPEC 3).

Architecture (paper 000, "Training on MNIST Dataset"): two 5x5 convolutions with 32 and 64
filters, each followed by 2x2 max pooling and a ReLU, then a fully connected layer with 1024
inputs and 10 outputs. With unpadded ("valid") convolutions a 28x28 input gives exactly
64 x 4 x 4 = 1024 features (28 -conv-> 24 -pool-> 12 -conv-> 8 -pool-> 4), so we keep MNIST's
geometry:

- Images (made by :func:`salbench.datasets.digits.digits_images`): each 8x8 digit (values
  0..16) is scaled to 0..255, resized bilinearly to 20x20 and centred in a 28x28 black frame
  (MNIST's 20x20 box in a 28x28 image), stored as uint8 [28, 28, 3] with identical channels
  (white digit on black, as MNIST).
- Model: a :class:`Classifier` with ``grayscale=True`` (mean of R, G, B), ``input_size``
  (28, 28), mean = std = 0.5, ``crop_fraction=1.0`` (``preprocess`` of a 28x28 image is the
  identity); input [B, 3, 28, 28] in [0, 1] -> logits [B, 10].
- Training (the paper's recipe): SGD, learning rate 0.0004, momentum 0.9, mini-batch 64,
  400 iterations, cross entropy; He-normal initialisation. Test accuracy 0.962 (lr 0.01 would
  give 0.987; we keep the paper's setting). Data: ``load_digits``, stratified 75/25 split with
  ``random_state=0`` (1347 train / 450 test). Weights are drawn from a seeded
  ``torch.Generator`` and batches are shuffled with it; training runs on one CPU thread
  (restored afterwards), so the result is the same on every run of the same torch build.
- Cache: the trained state dict is stored as safetensors under ``$SALBENCH_CACHE`` (default
  ``~/.cache/salbench``), named by a hash of the recipe; written to a temp file and renamed,
  so concurrent processes never see a partial file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from salbench.datasets.digits import IMAGE_RECIPE, SPLIT_RECIPE, digits_images
from salbench.models.base import Classifier
from salbench.models.registry import register
from salbench.models.tiny import init_with_generator
from salbench.models.weights import RANDOM, find_weights, load_into, load_state_dict_file

#: (H, W) of the digits images and of the model input.
DIGITS_SIZE = (28, 28)

#: Everything that determines the trained weights; its hash names the cache file.
RECIPE: dict[str, Any] = {
    "version": 1,
    "arch": "conv5x5(32)-maxpool2-relu-conv5x5(64)-maxpool2-relu-fc(1024,10)",
    "image": IMAGE_RECIPE,
    "split": SPLIT_RECIPE,
    "optimizer": {"name": "sgd", "lr": 0.0004, "momentum": 0.9},
    "batch_size": 64,
    "iterations": 400,
    "seed": 0,
    "torch": torch.__version__.split("+")[0],
}


class DigitsCNN(nn.Sequential):
    """Paper 000's MNIST CNN: [B, 1, 28, 28] (normalised) -> logits [B, 10]."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 32, 5), nn.MaxPool2d(2), nn.ReLU(),  # 28 -> 24 -> 12
            nn.Conv2d(32, 64, 5), nn.MaxPool2d(2), nn.ReLU(),  # 12 -> 8 -> 4
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 10),  # 1024 -> 10
        )


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the old value afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _to_input(img: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(0, 3, 1, 2).float().div(255.0)


def _wrap(net: nn.Module) -> Classifier:
    return Classifier(
        net.eval(),
        name="digits_cnn",
        input_size=DIGITS_SIZE,
        num_classes=10,
        mean=(0.5,),
        std=(0.5,),
        crop_fraction=1.0,
        grayscale=True,
    )


def train_digits_cnn() -> tuple[dict[str, torch.Tensor], float]:
    """Train the digits CNN from scratch with :data:`RECIPE` (deterministic, a few seconds).

    Returns:
        (state dict, training time in seconds).
    """
    t0 = time.perf_counter()
    with num_threads(1), torch.enable_grad():
        gen = torch.Generator().manual_seed(RECIPE["seed"])
        with torch.device("meta"):
            net = DigitsCNN()
        net = init_with_generator(net, RECIPE["seed"])
        model = _wrap(net)
        model.train()
        img, labels = digits_images("train")
        x, y = _to_input(img), torch.from_numpy(labels)
        opt = torch.optim.SGD(
            net.parameters(), lr=RECIPE["optimizer"]["lr"], momentum=RECIPE["optimizer"]["momentum"]
        )
        bs, order, pos = RECIPE["batch_size"], torch.randperm(len(y), generator=gen), 0
        for _ in range(RECIPE["iterations"]):
            if pos + bs > len(order):  # new epoch; drop the incomplete tail batch
                order, pos = torch.randperm(len(y), generator=gen), 0
            b = order[pos:pos + bs]
            pos += bs
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
    sd = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    return sd, time.perf_counter() - t0


def recipe_hash() -> str:
    """16 hex digits identifying :data:`RECIPE` (names the cache file)."""
    blob = json.dumps(RECIPE, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_dir() -> Path:
    """``$SALBENCH_CACHE`` or ``~/.cache/salbench``."""
    return Path(os.environ.get("SALBENCH_CACHE") or Path.home() / ".cache" / "salbench")


def cache_path() -> Path:
    """Where the trained weights are cached."""
    return cache_dir() / f"digits_cnn-{recipe_hash()}.safetensors"


def _save_atomic(sd: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(sd, tmp, metadata={"recipe": json.dumps(RECIPE, sort_keys=True)})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@functools.cache
def _trained_state_dict() -> dict[str, torch.Tensor]:
    """The trained weights: from the cache file if present (and valid), else trained and cached."""
    path = cache_path()
    if path.is_file():
        try:
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
            with torch.device("meta"):
                probe = DigitsCNN()
            load_into(probe.to_empty(device="cpu"), sd, "digits_cnn", str(path))
            return sd
        except Exception:  # corrupt or stale cache file: retrain and overwrite it
            pass
    sd, _ = train_digits_cnn()
    try:
        _save_atomic(sd, path)
    except OSError:  # read-only home etc.: still usable, just not cached
        pass
    return sd


def digits_accuracy(model: nn.Module, split: str = "test") -> float:
    """Top-1 accuracy of ``model`` (a digits Classifier) on ``digits_images(split)``."""
    img, labels = digits_images(split)
    with torch.no_grad(), num_threads(1):
        pred = model(_to_input(img)).argmax(-1).numpy()
    return float((pred == labels).mean())


@register("digits_cnn")
def build_digits_cnn(weights: str | None = None, **kwargs: Any) -> Classifier:
    """Paper 000's MNIST CNN trained on sklearn digits: [B, 3, 28, 28] in [0, 1] -> [B, 10].

    Args:
        weights: None (trained deterministically on first use, then cached on disk and in the
            process), ``"random"`` (seeded random weights, e.g. for model-randomisation
            checks), or a path to a state dict.
    """
    if kwargs:
        raise TypeError(f"digits_cnn: unexpected arguments {sorted(kwargs)}")
    with torch.device("meta"):
        net = DigitsCNN()
    net = init_with_generator(net, RECIPE["seed"])
    if weights is None:
        load_into(net, _trained_state_dict(), "digits_cnn", str(cache_path()))
    elif weights != RANDOM:
        path = find_weights("", weights, "digits_cnn")
        load_into(net, load_state_dict_file(path), "digits_cnn", str(path))
    return _wrap(net)
