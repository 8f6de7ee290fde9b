"""Per-image random generators, so a random method's result for an image does not depend on
which other images share its batch (batch result == loop of single-image results)."""

from __future__ import annotations

import hashlib

import torch


def image_generators(x: torch.Tensor, seed: int) -> list[torch.Generator]:
    """One CPU generator per image of x (float [B, 3, H, W]), seeded by ``seed`` and the
    image's content: the same (image, seed) always gives the same random stream."""
    data = x.detach().float().cpu().contiguous()
    gens = []
    for img in data:
        h = hashlib.sha256(str(int(seed)).encode())
        h.update(img.numpy().tobytes())
        gens.append(torch.Generator(device="cpu").manual_seed(int(h.hexdigest()[:15], 16)))
    return gens
