"""Performance Information Curves: SIC and AIC (Kapishnikov et al. 2019, XRAI), as in paper 001.

The package: :mod:`~salbench.metrics.pic.images` (random masks, bokeh images),
:mod:`~salbench.metrics.pic.levels` (WebP size, MS-SSIM), :mod:`~salbench.metrics.pic.curve`
(the curve of one image, aggregation), :mod:`~salbench.metrics.pic.engine` (threads and
cache), :mod:`~salbench.metrics.pic.settings` (:class:`PicSettings`, the one set of
parameters every entry point takes), :mod:`~salbench.metrics.pic.orchestrator` (the one
orchestrator, :func:`run_pic`, and the entry points :func:`pic_curve`, :func:`pic_batch`,
:func:`pic_prepare` / :func:`pic_finalize`) and :mod:`~salbench.metrics.pic.registration`
(the registered metrics) and :mod:`~salbench.metrics.pic.transport` (:class:`EncodedImages`:
the split form's images as lossless WebP between pipeline stages). Every public name is
importable from here.

Protocol (SPEC 5), the PAIR ``saliency`` package's ``compute_pic_metric`` (0.2.1), which
:func:`pic_curve` reproduces (tested: AUC within 1e-3, same samples skipped):

1. Bokeh images. For each threshold t of :data:`DEFAULT_THRESHOLDS` (.005 ... .75) keep the
   pixels whose saliency is >= the (1 - t)-quantile of the map (``np.quantile``, linear; ties
   are all kept, so a constant map keeps every pixel), plus the random mask (1% of the pixels,
   :func:`generate_random_mask`) and the four image corners; every other pixel is filled by
   linear interpolation (Delaunay triangulation of the kept pixels, ``LinearNDInterpolator``
   as in ``scipy.interpolate.griddata``), pixels outside the hull with the image's mean
   colour, then rounded to uint8 (through float32, as PAIR). If every pixel is kept the image
   is the original. The *fully blurred* image keeps only the random mask and the corners.
2. Information level: the lossless WebP size in bytes (Pillow, ``lossless=True,
   quality=100``; PAIR's ``estimate_image_entropy``) normalised as
   (s - s_blurred) / (s_original - s_blurred) and clipped to [0, 1]
   (``info="webp"``); or MS-SSIM(bokeh, original) (``info="msssim"``, paper 001, see below).
3. Prediction ``predict`` on uint8 images: the softmax probability of the original class
   (SIC) or 1.0/0.0 "the original class is still top-1" (AIC), normalised as
   (p - p_blurred) / (p_original - p_blurred) and clipped to [0, 1]; with
   ``keep_monotonous`` the running maximum in threshold order.
4. Skipping (a status, never an exception), checked in PAIR's order:
   ``skip_min_pred`` (p_original < min_pred), ``skip_blurred_info`` (the fully blurred
   image is at least as informative as the original), ``skip_blurred_pred`` (it is at least
   as predictive). A non-finite map or image of the wrong type gives ``invalid_input``.
5. The curve: the points (level, prediction) plus (0, 0) and (1, 1), sorted by level (stable),
   interpolated linearly (``interp1d``, i.e. ``np.interp`` with scipy 1.17: at a level shared
   by several points the value of the last) at x = k / (num_points - 1), k < num_points - 1,
   and y = 1 at x = 1; AUC by the trapezoid rule. Aggregation over images
   (:func:`aggregate`): the median curve (SIC) or the mean curve (AIC) of the "ok" curves,
   and its AUC.

Deviations from PAIR, each one noted where it happens:
- ``interpolate_curve`` follows PAIR on the installed scipy (1.17, whose ``interp1d``
  delegates float64 data to ``np.interp``). scipy's generic linear code
  (``interp1d._call_linear``: other dtypes, older releases) takes the *first* of tied levels
  and returns NaN at x = 0 when a bokeh level clips to 0 (0 / 0 against the (0, 0) anchor),
  which would make PAIR's AUC NaN; that is not reproduced.
- ``num_points`` counts every point (PAIR's ``num_data_points`` + 1); min_pred defaults to 0.
- ``info="msssim"`` (paper 001, Sec. 4.5): the level is MS-SSIM(bokeh, original) itself
  (5 scales, window 11, sigma 1.5; :mod:`salbench.metrics.msssim`, small images upsampled),
  not normalised by the fully blurred image's MS-SSIM (the paper uses it as the level
  directly); the original's level is 1, and the blurred-information skip fires only when
  MS-SSIM(blurred, original) >= 1.
- Speed, not results: one triangulation per bokeh image (PAIR triangulates once per colour
  channel; the barycentric weights do not depend on the values, so the results are equal bit
  for bit), bokeh images and WebP sizes in a thread pool (both release the GIL), predictions
  batched, and an LRU cache (:data:`BOKEH_CACHE`) of bokeh images and levels keyed by content
  hashes, so ``sic`` and ``aic`` (or several methods' fully blurred images) share the work.

``pic_blur`` (paper 001, Sec. 4.4, the IDGI replication preset): the base is the image
blurred by Pillow's ``GaussianBlur(radius=20)``; 25 bokeh images reveal the top
round(j / 24 * H * W) pixels, j = 0..24 (evenly spaced pixel counts, ranking by saliency,
ties in raster order) and take every other pixel from the base; j = 0 is the base itself
(the "fully blurred" image) and j = 24 the original. Levels, normalisation, skips, curve and
AUC are as above (no random mask). The paper then bins the (level, value) pairs of all images
into 100 bins (SIC: median of p / p_original, AIC: mean top-1 accuracy); the per-sample
points are returned for that (:func:`aggregate_binned`).

``bokeh="fast"`` (opt-in; sic, aic, sic_msssim, aic_msssim and :func:`pic_curve` take it):
the same images with only the boundary of the kept pixels triangulated
(:func:`fast_bokeh_image`): equal to PAIR's up to the ties of cocircular pixels, where
either mode's choice of triangles is arbitrary; the information level is PAIR's WebP as
ever. It saves the triangulation of kept regions' interiors, so the most on smooth maps;
measured speed and AUC differences: docs/METRICS.md, "PIC".

Cost: there is no ``fast`` profile (fewer thresholds would change the protocol). The
triangulations and WebP encodings dominate; a second metric on the same images and maps
(``aic`` after ``sic``) is served from the cache. Measured times: docs/PERFORMANCE.md,
"PIC".
"""

from __future__ import annotations

from salbench.metrics.pic.curve import (
    DEFAULT_THRESHOLDS,
    ERROR_STATUS,
    KINDS,
    PIC_BLUR_STEPS,
    PIC_BLUR_THRESHOLDS,
    SKIP_STATUSES,
    STATUS_OK,
    PicCurve,
    aggregate,
    aggregate_binned,
    curve_from_levels,
    interpolate_curve,
    skip_status,
)
from salbench.metrics.pic.engine import BOKEH_CACHE, default_workers
from salbench.metrics.pic.images import (
    blur_base,
    bokeh_image,
    content_hash,
    count_masks,
    fast_bokeh_image,
    generate_random_mask,
    image_mask,
    single_threaded_blas,
    threshold_masks,
)
from salbench.metrics.pic.levels import msssim_levels, webp_bytes, webp_size
from salbench.metrics.pic.orchestrator import (
    model_scores,
    pic_batch,
    pic_curve,
    pic_finalize,
    pic_prepare,
    predictor,
    run_pic,
)
from salbench.metrics.pic.registration import aic, aic_msssim, pic_blur, sic, sic_msssim
from salbench.metrics.pic.settings import BOKEHS, INFOS, PicSettings
from salbench.metrics.pic.transport import EncodedImages, decode_image, transport_bytes

__all__ = [
    "BOKEHS", "BOKEH_CACHE", "DEFAULT_THRESHOLDS", "ERROR_STATUS", "INFOS", "KINDS",
    "PIC_BLUR_STEPS", "PIC_BLUR_THRESHOLDS", "SKIP_STATUSES", "STATUS_OK", "EncodedImages",
    "PicCurve", "PicSettings", "aggregate", "aggregate_binned", "aic", "aic_msssim",
    "blur_base", "bokeh_image", "content_hash", "count_masks", "curve_from_levels",
    "decode_image", "default_workers", "fast_bokeh_image",
    "generate_random_mask", "image_mask", "interpolate_curve", "model_scores",
    "msssim_levels", "pic_batch", "pic_blur", "pic_curve", "pic_finalize", "pic_prepare",
    "predictor", "run_pic", "sic", "sic_msssim", "single_threaded_blas", "skip_status",
    "threshold_masks", "transport_bytes", "webp_bytes", "webp_size",
]
