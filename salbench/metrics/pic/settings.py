"""The settings of one PIC computation, shared by every entry point of the PIC package."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from salbench.metrics.pic.curve import DEFAULT_THRESHOLDS

INFOS = ("webp", "msssim")
BOKEHS = ("interp", "blur", "fast")
#: the bokeh constructions that interpolate between kept pixels (random mask, thresholds)
INTERPOLATED = ("interp", "fast")


@dataclass(frozen=True)
class PicSettings:
    """How PIC builds its images, levels and curves (the protocol in :mod:`salbench.metrics.pic`).

    Attributes:
        info: "webp" (normalised lossless WebP size) or "msssim" (MS-SSIM vs the original).
        bokeh: "interp" (PAIR's interpolated images), "fast" (the same interpolation with
            only the boundary of the kept pixels triangulated:
            :func:`~salbench.metrics.pic.images.fast_bokeh_image`; equal to "interp" up to
            the ties of cocircular pixels) or "blur" (pic_blur: Gaussian-blurred base of
            radius ``blur_radius``, thresholds = fractions of pixels revealed).
        thresholds: fractions of most salient pixels revealed, ascending in [0, 1] (stored
            as a tuple of floats).
        min_pred: skip the image if the original's prediction is below this.
        keep_monotonous: running maximum of the normalised predictions.
        num_points: points of the curve on [0, 1] (PAIR's num_data_points + 1).
        mask_fraction, seed: the random mask of each image (:func:`image_mask`) where the
            entry point makes it (batch and split forms; ``pic_curve`` is given its mask).
        blur_radius: the Gaussian blur of ``bokeh="blur"``.
        num_workers: threads for bokeh images and WebP sizes (None: ``default_workers()``).
    """

    info: str = "webp"
    bokeh: str = "interp"
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    min_pred: float = 0.0
    keep_monotonous: bool = True
    num_points: int = 1001
    mask_fraction: float = 0.01
    blur_radius: float = 20.0
    seed: int = 0
    num_workers: int | None = None

    def __post_init__(self) -> None:
        if self.info not in INFOS:
            raise ValueError(f"info must be one of {INFOS}, got {self.info!r}")
        if self.bokeh not in BOKEHS:
            raise ValueError(f"bokeh must be one of {BOKEHS}, got {self.bokeh!r}")
        thresholds = tuple(float(t) for t in self.thresholds)
        if list(thresholds) != sorted(thresholds) or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be ascending in [0, 1], got {thresholds}")
        object.__setattr__(self, "thresholds", thresholds)

    @property
    def normalize_levels(self) -> bool:
        """WebP sizes are normalised by the original's and the blurred image's; MS-SSIM not."""
        return self.info == "webp"

    def curve_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`curve_from_levels` these settings fix."""
        return dict(min_pred=self.min_pred, keep_monotonous=self.keep_monotonous,
                    num_points=self.num_points)


def settings_with(settings: PicSettings | None, overrides: dict[str, Any]) -> PicSettings:
    """``settings`` (default :class:`PicSettings`) with ``overrides`` (field names) replaced;
    TypeError names an unknown one."""
    return replace(settings or PicSettings(), **overrides)
