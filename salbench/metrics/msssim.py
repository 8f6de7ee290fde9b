"""Multi-scale structural similarity (MS-SSIM, Wang, Simoncelli & Bovik 2003) in torch.

The information level of paper 001's SIC/AIC variant (SPEC 5: ``sic_msssim``, ``aic_msssim``).
Protocol, the standard one, identical to ``pytorch_msssim.ms_ssim`` (tested to < 1e-4):

- 5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333);
- an 11-tap Gaussian window, sigma 1.5, applied separably per channel with no padding
  ("valid" filtering, so the SSIM maps shrink by 10 px per side pair);
- K1 = 0.01, K2 = 0.03, C1 = (K1 L)^2, C2 = (K2 L)^2 with L = ``data_range``;
- at scales 1-4 the mean contrast-structure term cs, at scale 5 the mean SSIM; each is
  clamped at 0 (ReLU) before the weighted geometric product; between scales a 2x2 average
  pool with padding (H mod 2, W mod 2) (count_include_pad, as ``F.avg_pool2d``);
- the per-channel values are averaged over channels (one number per image).

Small images: the four poolings need the shorter side to exceed (11 - 1) * 2^4 = 160 px.
Deviation from ``pytorch_msssim`` (which refuses such inputs): when the shorter side is below
:data:`MIN_SIDE` (161) both images are upsampled *before* anything else, by bilinear
interpolation (``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``) to
(ceil(H * 161 / m), ceil(W * 161 / m)) with m = min(H, W) (integer arithmetic, aspect ratio
kept, shorter side exactly 161). Identical images still score exactly 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

MSSSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN_SIZE = 11
WIN_SIGMA = 1.5
#: Smallest shorter side the 5-scale protocol accepts: (WIN_SIZE - 1) * 2**4 + 1.
MIN_SIDE = (WIN_SIZE - 1) * 2 ** (len(MSSSIM_WEIGHTS) - 1) + 1


def gaussian_window(
    size: int = WIN_SIZE, sigma: float = WIN_SIGMA, *, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Normalised 1-D Gaussian window float [size], centred at size // 2."""
    coords = torch.arange(size, dtype=dtype, device=device) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Separable valid filtering of x [N, C, H, W] with the 1-D window (per channel)."""
    c, k = x.shape[1], win.numel()
    out = x
    if out.shape[2] >= k:
        out = F.conv2d(out, win.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    if out.shape[3] >= k:
        out = F.conv2d(out, win.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return out


def ssim_terms(
    x: torch.Tensor, y: torch.Tensor, win: torch.Tensor, data_range: float,
    k: tuple[float, float] = (0.01, 0.03),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image and channel, each float [N, C]."""
    c1, c2 = (k[0] * data_range) ** 2, (k[1] * data_range) ** 2
    mu_x, mu_y = _blur(x, win), _blur(y, win)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = _blur(x * x, win) - mu_xx
    var_y = _blur(y * y, win) - mu_yy
    cov = _blur(x * y, win) - mu_xy
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def upsampled_size(h: int, w: int, min_side: int = MIN_SIDE) -> tuple[int, int]:
    """(H, W) after the small-image upsampling: shorter side exactly ``min_side``.

    Unchanged when min(H, W) >= min_side; else (ceil(H * s / m), ceil(W * s / m)).
    """
    m = min(h, w)
    if m >= min_side:
        return h, w
    return -(-h * min_side // m), -(-w * min_side // m)


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 255.0,
    weights: Sequence[float] = MSSSIM_WEIGHTS,
    win_size: int = WIN_SIZE,
    win_sigma: float = WIN_SIGMA,
    k: tuple[float, float] = (0.01, 0.03),
    upsample_small: bool = True,
) -> torch.Tensor:
    """MS-SSIM of x vs y per image, float [N] (see the module docstring for the protocol).

    x, y: float [N, C, H, W] (or [C, H, W] / [H, W], treated as one image) with values in
    [0, data_range]. Images whose shorter side is below the minimum for ``len(weights)``
    scales are upsampled (bilinear) when ``upsample_small``; otherwise a ValueError.
    """
    if x.shape != y.shape:
        raise ValueError(f"ms_ssim: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    while x.ndim < 4:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"ms_ssim: expected [N, C, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        x, y = x.float(), y.float()
    if win_size % 2 != 1:
        raise ValueError(f"ms_ssim: win_size must be odd, got {win_size}")
    levels = len(weights)
    min_side = (win_size - 1) * 2 ** (levels - 1) + 1
    h, w = x.shape[-2:]
    if min(h, w) < min_side:
        if not upsample_small:
            raise ValueError(
                f"ms_ssim: shorter side {min(h, w)} < {min_side} px needed for {levels} scales"
            )
        size = upsampled_size(h, w, min_side)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False, antialias=False)
    win = gaussian_window(win_size, win_sigma, dtype=x.dtype, device=x.device)
    wts = torch.as_tensor(list(weights), dtype=x.dtype, device=x.device)
    terms = []
    for i in range(levels):
        ssim_c, cs_c = ssim_terms(x, y, win, data_range, k)
        if i < levels - 1:
            terms.append(torch.relu(cs_c))
            pad = (x.shape[2] % 2, x.shape[3] % 2)
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
    terms.append(torch.relu(ssim_c))
    stacked = torch.stack(terms, dim=0)  # [levels, N, C]
    return torch.prod(stacked ** wts.view(-1, 1, 1), dim=0).mean(dim=1)
