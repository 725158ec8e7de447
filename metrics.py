"""Image quality metrics, computed the way the SR literature reports them (MATLAB protocol).

* ``calculate_psnr`` / ``calculate_ssim``: full reference, on the Y channel of MATLAB's
  ``rgb2ycbcr`` with ``scale`` border pixels shaved (``rgb2y``).
* ``calculate_niqe`` (``niqe_or_nan``): no reference, lower = more natural (Mittal et al. 2013).
* ``calculate_sharpness``: gradient energy of SR relative to HR (1 = as sharp as HR).
* ``mean_metrics``: the per-image rows of ``inference.evaluate`` averaged for a table.

Images are ``uint8`` ``HxWx3`` RGB (or ``HxW`` grayscale), the convention of ``utils.py``.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from imresize import imresize

# --------------------------------------------------------------------------- metrics
# The evaluation protocol of the SR literature (SRCNN, VDSR, SRGAN, the SelfExSR
# benchmark code) is MATLAB's: Y channel of ``rgb2ycbcr`` on uint8 images, ``scale``
# border pixels shaved, PSNR with peak 255 and Wang et al.'s ``ssim_index.m``. Numbers
# computed any other way (RGB, BT.601 full range, float images, 'same' filtering)
# differ by up to ~1 dB and cannot be compared with published tables.

# MATLAB rgb2ycbcr for uint8: T = (1/255) * origT, offset 16 (Poynton, eq. 9.6).
# MATLAB rgb2ycbcr for uint8: T = (1/255) * origT, offset 16 (Poynton, eq. 9.6).
_Y_COEFFS = tuple((1 / 255) * c for c in (65.481, 128.553, 24.966))


def rgb2y(img: np.ndarray) -> np.ndarray:
    """Luma of an RGB image exactly as MATLAB ``rgb2ycbcr`` computes it on ``uint8``.

    ``Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255)``, in the range 16..235.
    As in MATLAB (``imlincomb``) the sum is formed in float64 with coefficients
    ``(1/255) * c`` and rounded half away from zero; this is the "limited range"
    BT.601 luma, not the full-range ``0.299 R + 0.587 G + 0.114 B``.

    Args:
        img: ``uint8`` ``HxWx3`` RGB.

    Returns:
        ``uint8`` ``HxW``.
    """
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError(
            f"rgb2y expects a uint8 numpy image (MATLAB's rgb2ycbcr on uint8), got "
            f"{getattr(img, 'dtype', type(img).__name__)}; convert with tensor2img first"
        )
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb2y expects an HxWx3 RGB image, got shape {img.shape}")
    rgb = img.astype(np.float64)
    # Same accumulation order as imlincomb: K1*A1 + K2*A2 + K3*A3 + offset.
    y = _Y_COEFFS[0] * rgb[..., 0] + _Y_COEFFS[1] * rgb[..., 1] + _Y_COEFFS[2] * rgb[..., 2] + 16.0
    return np.floor(y + 0.5).astype(np.uint8)  # y > 0, so this is round-half-away


def _metric_channels(img: np.ndarray, ref: np.ndarray, crop_border: int, test_y_channel: bool,
                     fn_name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate a pair of images and return the float64 channel pairs to score."""
    for what, arr in (("img", img), ("ref", ref)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
            raise ValueError(
                f"{fn_name}: {what} must be a uint8 numpy image, got "
                f"{getattr(arr, 'dtype', type(arr).__name__)}. The MATLAB protocol is defined on "
                f"8-bit images (peak 255, Y rounded to uint8); convert with tensor2img first."
            )
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
            raise ValueError(f"{fn_name}: {what} must be HxW or HxWx3 RGB, got shape {arr.shape}")
    if img.shape != ref.shape:
        raise ValueError(
            f"{fn_name}: img and ref must have the same shape, got {img.shape} and {ref.shape} "
            f"(mod-crop the HR image to a multiple of the scale, and compare grayscale with grayscale)"
        )
    if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"{fn_name}: crop_border must be an integer >= 0, got {crop_border!r}")
    h, w = img.shape[:2]
    if h - 2 * crop_border < 1 or w - 2 * crop_border < 1:
        raise ValueError(f"{fn_name}: crop_border={crop_border} leaves nothing of a {h}x{w} image")
    if img.ndim == 3 and test_y_channel:
        img, ref = rgb2y(img), rgb2y(ref)
    if img.ndim == 2:  # grayscale is used as it is (no conversion), as in MATLAB
        img, ref = img[:, :, None], ref[:, :, None]
    b = crop_border
    img = img[b:h - b, b:w - b].astype(np.float64)
    ref = ref[b:h - b, b:w - b].astype(np.float64)
    return [(img[:, :, c], ref[:, :, c]) for c in range(img.shape[2])]


def calculate_psnr(img: np.ndarray, ref: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """PSNR in dB between two ``uint8`` images, MATLAB protocol.

    Args:
        img: ``uint8`` ``HxW`` or ``HxWx3`` RGB, e.g. the SR result.
        ref: ``uint8`` image of the same shape, the ground truth HR.
        crop_border: pixels shaved from each side before scoring; use ``scale``.
        test_y_channel: score the Y of MATLAB ``rgb2ycbcr`` (see :func:`rgb2y`). With
            False an RGB pair is scored on all three channels at once: one MSE over
            every value, as MATLAB's ``psnr`` on RGB arrays. A single-channel pair is
            always scored as it is.

    Returns:
        ``10 log10(255^2 / MSE)`` computed in float64; ``inf`` when the (cropped)
        images are identical (MSE 0).

    Raises:
        ValueError: non-``uint8`` input, shape mismatch, bad ``crop_border``.
    """
    pairs = _metric_channels(img, ref, crop_border, test_y_channel, "calculate_psnr")
    # one MSE over every pixel of every channel (MATLAB's psnr on an RGB array), not a mean
    # of per-channel PSNRs (which is inf as soon as one channel matches)
    mse = float(np.mean([np.mean((a - b) ** 2) for a, b in pairs]))  # channels have equal size
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)`` (normalised to sum 1)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter2_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(g' * g, img, 'valid')`` for a separable, symmetric window."""
    k = g.size
    out = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(out, k, axis=1) @ g


def _ssim_single(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. ``ssim_index.m`` (K = [0.01 0.03], L = 255, 11x11 Gaussian 1.5, 'valid')."""
    if min(a.shape) < 11:
        raise ValueError(f"calculate_ssim: the cropped image ({a.shape[0]}x{a.shape[1]}) is smaller "
                         f"than the 11x11 SSIM window")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()
    mu1, mu2 = _filter2_valid(a, g), _filter2_valid(b, g)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = _filter2_valid(a * a, g) - mu1_sq
    sigma2_sq = _filter2_valid(b * b, g) - mu2_sq
    sigma12 = _filter2_valid(a * b, g) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())


def calculate_ssim(img: np.ndarray, ref: np.ndarray, crop_border: int, test_y_channel: bool = True) -> float:
    """SSIM between two ``uint8`` images, MATLAB protocol (Wang et al. 2004, ``ssim_index.m``).

    Gaussian window 11x11, sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``,
    statistics by ``filter2(window, x, 'valid')`` (no padding: the SSIM map is
    10 pixels smaller than the cropped image in each dimension), float64, the
    mean of the map. No downsampling (unlike the later ``ssim.m``).

    Args:
        img: ``uint8`` ``HxW`` or ``HxWx3`` RGB, e.g. the SR result.
        ref: ``uint8`` image of the same shape, the ground truth HR.
        crop_border: pixels shaved from each side before scoring; use ``scale``.
        test_y_channel: score the Y of MATLAB ``rgb2ycbcr`` (see :func:`rgb2y`). With
            False an RGB pair is scored per channel and the SSIMs are averaged.
            A single-channel pair is always scored as it is.

    Returns:
        SSIM in [-1, 1]; 1.0 for identical images.

    Raises:
        ValueError: non-``uint8`` input, shape mismatch, bad ``crop_border``, or a
            cropped image smaller than the 11x11 window.
    """
    pairs = _metric_channels(img, ref, crop_border, test_y_channel, "calculate_ssim")
    return float(np.mean([_ssim_single(a, b) for a, b in pairs]))


def _sobel_magnitude(a: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a float 2-D array ('valid': 2 pixels smaller per side pair)."""
    gx = (a[:-2, 2:] + 2 * a[1:-1, 2:] + a[2:, 2:]) - (a[:-2, :-2] + 2 * a[1:-1, :-2] + a[2:, :-2])
    gy = (a[2:, :-2] + 2 * a[2:, 1:-1] + a[2:, 2:]) - (a[:-2, :-2] + 2 * a[:-2, 1:-1] + a[:-2, 2:])
    return np.hypot(gx, gy)


def calculate_sharpness(img: np.ndarray, ref: np.ndarray, crop_border: int) -> float:
    """Fine detail of ``img`` relative to ``ref``: mean Sobel gradient magnitude, img / ref.

    Computed on the same pixels as PSNR and SSIM (Y channel of :func:`rgb2y`, ``crop_border``
    shaved). 1.0: as much edge contrast and texture as the HR image; below 1: blurrier
    (bicubic, MSE-trained networks); GAN results come closer to 1, or above it with noise.
    It measures the *amount* of detail, not whether it is the right detail (PSNR and SSIM
    do that), and is not part of the MATLAB protocol: it is the kit's own measure, used to
    check that the GAN generator is sharper than the PSNR one.

    Args:
        img: ``uint8`` ``HxW`` or ``HxWx3`` RGB, e.g. the SR result.
        ref: ``uint8`` image of the same shape, the ground truth HR.
        crop_border: pixels shaved from each side before scoring; use ``scale``.

    Returns:
        the ratio (float >= 0); NaN when ``ref`` is flat (no gradient at all).
    """
    pairs = _metric_channels(img, ref, crop_border, True, "calculate_sharpness")
    if min(pairs[0][0].shape) < 3:
        raise ValueError("calculate_sharpness: the cropped image is smaller than the 3x3 Sobel window")
    num = sum(float(_sobel_magnitude(a).mean()) for a, _ in pairs)
    den = sum(float(_sobel_magnitude(b).mean()) for _, b in pairs)
    return float("nan") if den == 0 else num / den


# --------------------------------------------------------------------------- NIQE
# NIQE (Mittal, Soundararajan and Bovik, "Making a 'completely blind' image quality
# analyzer", IEEE Signal Processing Letters 20(3), 2013): a no-reference measure of how far
# an image's local statistics are from those of pristine natural photographs; lower is more
# natural. Written from the paper and the NIQE MATLAB release (computequality.m,
# estimateaggdparam.m, computefeature.m); the steps that decide the last digits are MATLAB's:
#
# * the image is the uint8 Y of rgb2ycbcr (grayscale as it is), made double, cropped to whole
#   96x96 blocks (top-left kept);
# * MSCN coefficients (I - mu) / (sigma + 1), mu and sigma from imfilter with the 7x7 Gaussian
#   window (sigma 7/6) and 'replicate' borders, sigma = sqrt(|E[I^2] - mu^2|), the two
#   filtered moments and sigma in single precision (see _mscn);
# * per block 18 features: an AGGD fit of the MSCN values (alpha, mean of the two betas) and of
#   the products with 4 neighbours (circshift by [0 1; 1 0; 1 1; 1 -1] *inside* the block,
#   wrapping around; BRISQUE's fourth shift is [-1 1], NIQE's is [1 -1]):
#   alpha, (beta_r - beta_l) Gamma(2/alpha) / Gamma(1/alpha), beta_l, beta_r; alpha is the
#   point of the grid 0.2:0.001:10 whose moment ratio is nearest (first one on ties, the
#   first grid point when the ratio is NaN, as MATLAB's min);
# * the second scale is imresize(I, 0.5) of the double image (bicubic, antialiased, not
#   rounded, borders mirrored as R2021a's imresize), with 48x48 blocks: 36 features per block;
# * NIQE = sqrt((mu_p - mu_d) pinv((S_p + S_d) / 2) (mu_p - mu_d)'), mu_d = nanmean over the
#   blocks, S_d = nancov (blocks with a NaN feature left out, normalised by N - 1).
# NIQE (Mittal, Soundararajan and Bovik, "Making a 'completely blind' image quality
# analyzer", IEEE Signal Processing Letters 20(3), 2013): a no-reference measure of how far
# an image's local statistics are from those of pristine natural photographs; lower is more
# natural. Written from the paper and the NIQE MATLAB release (computequality.m,
# estimateaggdparam.m, computefeature.m); the steps that decide the last digits are MATLAB's:
#
# * the image is the uint8 Y of rgb2ycbcr (grayscale as it is), made double, cropped to whole
#   96x96 blocks (top-left kept);
# * MSCN coefficients (I - mu) / (sigma + 1), mu and sigma from imfilter with the 7x7 Gaussian
#   window (sigma 7/6) and 'replicate' borders, sigma = sqrt(|E[I^2] - mu^2|), the two
#   filtered moments and sigma in single precision (see _mscn);
# * per block 18 features: an AGGD fit of the MSCN values (alpha, mean of the two betas) and of
#   the products with 4 neighbours (circshift by [0 1; 1 0; 1 1; 1 -1] *inside* the block,
#   wrapping around; BRISQUE's fourth shift is [-1 1], NIQE's is [1 -1]):
#   alpha, (beta_r - beta_l) Gamma(2/alpha) / Gamma(1/alpha), beta_l, beta_r; alpha is the
#   point of the grid 0.2:0.001:10 whose moment ratio is nearest (first one on ties, the
#   first grid point when the ratio is NaN, as MATLAB's min);
# * the second scale is imresize(I, 0.5) of the double image (bicubic, antialiased, not
#   rounded, borders mirrored as R2021a's imresize), with 48x48 blocks: 36 features per block;
# * NIQE = sqrt((mu_p - mu_d) pinv((S_p + S_d) / 2) (mu_p - mu_d)'), mu_d = nanmean over the
#   blocks, S_d = nancov (blocks with a NaN feature left out, normalised by N - 1).
NIQE_BLOCK = 96  # block side at the first scale (the size the pristine model was fitted with)


NIQE_MODEL_FILE = Path(__file__).resolve().parent / "checkpoints" / "niqe_pris_params.npz"


@functools.lru_cache(maxsize=1)
def _niqe_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pristine model ``(mu 36, cov 36x36, window 7x7)``, float64, loaded once.

    ``checkpoints/niqe_pris_params.npz`` holds ``mu_pris_param`` (1x36), ``cov_pris_param``
    (36x36) and ``gaussian_window`` (7x7) as estimated by the NIQE MATLAB release
    (live.ece.utexas.edu, ``modelparameters.mat``), in the copy distributed with BasicSR
    (Apache-2.0).
    """
    if not NIQE_MODEL_FILE.is_file():
        raise FileNotFoundError(f"NIQE model file {NIQE_MODEL_FILE} is missing; restore it from the kit's "
                                f"repository (checkpoints/niqe_pris_params.npz)")
    with np.load(NIQE_MODEL_FILE) as f:
        mu = np.asarray(f["mu_pris_param"], dtype=np.float64).reshape(-1)
        cov = np.asarray(f["cov_pris_param"], dtype=np.float64)
        window = np.asarray(f["gaussian_window"], dtype=np.float64)
    for arr in (mu, cov, window):
        arr.setflags(write=False)
    return mu, cov, window


def _matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """MATLAB's ``start:step:stop``: the first half counted up from ``start``, the second down
    from ``stop``, so both ends are exact (``np.arange`` drifts by a few ulps towards the end)."""
    n = int(round((stop - start) / step))
    k = np.arange(n + 1, dtype=np.float64)
    half = n // 2
    return np.where(k <= half, start + k * step, stop - (n - k) * step)


@functools.lru_cache(maxsize=1)
def _aggd_grid() -> tuple[np.ndarray, np.ndarray]:
    """The shape grid 0.2:0.001:10 and its moment ratio ``Gamma(2/g)^2 / (Gamma(1/g) Gamma(3/g))``.

    The ratio increases strictly with ``g`` (0.0 .. 0.75), which lets the nearest grid point be
    found by bisection instead of by scanning all 9,801 points for every block.
    """
    from scipy.special import gamma  # scipy: already needed by imresize

    shapes = _matlab_colon(0.2, 0.001, 10.0)
    ratio = gamma(2 / shapes) ** 2 / (gamma(1 / shapes) * gamma(3 / shapes))
    if not np.all(np.diff(ratio) > 0):  # the bisection below relies on it
        raise RuntimeError("the AGGD moment ratio is not increasing on the grid")
    shapes.setflags(write=False)
    ratio.setflags(write=False)
    return shapes, ratio


def _aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalised Gaussian fit of each row of ``x`` (``B x N`` float64), as
    ``estimateaggdparam.m``: moment matching on the grid of :func:`_aggd_grid`.

    Returns ``(alpha, beta_left, beta_right)``, each of length ``B``. A row without negative
    (or positive) values gets NaN betas and alpha 0.2, as MATLAB.
    """
    shapes, ratio = _aggd_grid()
    sq = x * x
    neg, pos = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):  # empty sides give NaN, as in MATLAB
        left_std = np.sqrt((sq * neg).sum(axis=1) / neg.sum(axis=1))
        right_std = np.sqrt((sq * pos).sum(axis=1) / pos.sum(axis=1))
        g = left_std / right_std
        r = np.abs(x).mean(axis=1) ** 2 / sq.mean(axis=1)
        r_norm = r * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    # Nearest grid ratio: the minimum of (ratio - r_norm)^2 lies among the neighbours of the
    # insertion point; taking the first minimum of those few equals MATLAB's min over the grid.
    at = np.searchsorted(ratio, np.nan_to_num(r_norm, nan=-np.inf))
    cand = np.clip(at[:, None] + np.arange(-2, 2), 0, ratio.size - 1)
    best = cand[np.arange(cand.shape[0]), np.argmin((ratio[cand] - r_norm[:, None]) ** 2, axis=1)]
    best[np.isnan(r_norm)] = 0  # MATLAB's min of an all-NaN vector returns index 1
    alpha = shapes[best]
    from scipy.special import gamma

    spread = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * spread, right_std * spread


def _niqe_block_features(mscn: np.ndarray, block: int) -> np.ndarray:
    """The 18 features of every ``block x block`` block of an MSCN map, ``nblocks x 18``.

    Vectorised over the blocks (no Python loop over them); circular shifts wrap inside each
    block, as ``circshift`` on the block in ``computefeature.m``.
    """
    from scipy.special import gamma

    h, w = mscn.shape
    blocks = mscn.reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3).reshape(-1, block, block)
    nb = blocks.shape[0]
    alpha, bl, br = _aggd_fit(blocks.reshape(nb, -1))
    feats = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):  # right, down, down-right, down-left (not BRISQUE's up-right)
        pair = blocks * np.roll(blocks, shift, axis=(1, 2))
        alpha, bl, br = _aggd_fit(pair.reshape(nb, -1))
        feats += [alpha, (br - bl) * gamma(2 / alpha) / gamma(1 / alpha), bl, br]
    return np.stack(feats, axis=1)


def _mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a float64 ``HxW`` image (float64 out).

    ``imfilter(..., 'replicate')`` is a correlation with edge pixels repeated. The local mean
    and second moment are rounded to single precision and sigma is formed in single: that is
    what reproduces MATLAB R2021a (3e-7 on the baboon; float64 throughout lands 3.9e-4 away,
    because ``E[I^2] - mu^2`` cancels in flat areas and the rounding there moves sigma).
    """
    from scipy.ndimage import correlate1d

    g = window.sum(axis=1)  # the Gaussian window is g g' (rank 1): filter rows, then columns

    def imfilter(a: np.ndarray) -> np.ndarray:
        return correlate1d(correlate1d(a, g, axis=0, mode="nearest"), g, axis=1, mode="nearest")

    mu = imfilter(img).astype(np.float32)
    second = imfilter(img * img).astype(np.float32)
    sigma = np.sqrt(np.abs(second - mu * mu)).astype(np.float64)  # float32 arithmetic
    return (img - mu) / (sigma + 1)


def calculate_niqe(img: np.ndarray, crop_border: int = 0) -> float:
    """NIQE of a ``uint8`` image (no reference needed); lower = more natural.

    MATLAB's NIQE (Mittal et al., IEEE SPL 2013; the NIQE MATLAB release, block 96x96, no
    overlap) with its pristine model (``checkpoints/niqe_pris_params.npz``: the release's
    ``modelparameters.mat``, as distributed with BasicSR under Apache-2.0). RGB images are
    scored on the Y channel of MATLAB ``rgb2ycbcr`` (:func:`rgb2y`, rounded to uint8 as MATLAB
    does, the PSNR protocol), grayscale as it is; the second scale is made with the kit's
    MATLAB-exact ``imresize`` by 0.5 (``padding="symmetric"``, R2021a's borders). Matches
    MATLAB R2021a on Set14's baboon (480x492): 5.72957363 vs 5.72957338. Pristine photographs
    score about 3-5 (Set14 HR 4.92), bicubic x4 upscales 7-9.

    Args:
        img: ``uint8`` ``HxWx3`` RGB or ``HxW`` grayscale.
        crop_border: pixels shaved from each side first (use ``scale`` for SR results, as
            for PSNR). What is left is cropped to whole 96x96 blocks from the top-left.

    Returns:
        the NIQE score (float, >= 0).

    Raises:
        ValueError: not a ``uint8`` HxW / HxWx3 array, bad ``crop_border``, or fewer than
            two 96x96 blocks left after the crop (the covariance needs two).
    """
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError(f"calculate_niqe: expects a uint8 numpy image, got "
                         f"{getattr(img, 'dtype', type(img).__name__)}; convert with tensor2img first")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"calculate_niqe: expects HxW or HxWx3 RGB, got shape {img.shape}")
    if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"calculate_niqe: crop_border must be an integer >= 0, got {crop_border!r}")
    y = rgb2y(img) if img.ndim == 3 else img
    b = int(crop_border)
    y = y[b:y.shape[0] - b, b:y.shape[1] - b]
    rows, cols = y.shape[0] // NIQE_BLOCK, y.shape[1] // NIQE_BLOCK
    if rows * cols < 2:
        raise ValueError(f"calculate_niqe: the image is {img.shape[0]}x{img.shape[1]} (crop_border "
                         f"{crop_border}); NIQE needs at least two 96x96 blocks, e.g. 96x192")
    mu_p, cov_p, window = _niqe_model()
    x = y[:rows * NIQE_BLOCK, :cols * NIQE_BLOCK].astype(np.float64)
    feats = [_niqe_block_features(_mscn(x, window), NIQE_BLOCK)]
    # float in, float out (not rounded, as MATLAB on a double image); mirrored borders, as
    # MATLAB R2021a (clamped borders land 0.01 away from its baboon value).
    x = imresize(x, 0.5, padding="symmetric")
    feats.append(_niqe_block_features(_mscn(x, window), NIQE_BLOCK // 2))
    feats = np.concatenate(feats, axis=1)  # nblocks x 36
    complete = feats[~np.isnan(feats).any(axis=1)]
    if complete.shape[0] < 2:
        raise ValueError("calculate_niqe: fewer than two blocks have finite features (a flat image?); "
                         "NIQE is undefined for it")
    mu_d = np.nanmean(feats, axis=0)  # each feature over the blocks that have it, as nanmean
    cov_d = np.cov(complete, rowvar=False)  # normalised by N - 1, as nancov
    cov = (cov_p + cov_d) / 2
    # MATLAB's pinv tolerance: max(size) * norm(A) * eps.
    inv = np.linalg.pinv(cov, rcond=max(cov.shape) * np.finfo(np.float64).eps)
    d = mu_p - mu_d
    return float(np.sqrt(d @ inv @ d))


def niqe_or_nan(img: np.ndarray, crop_border: int = 0) -> float:
    """:func:`calculate_niqe`, or NaN when the image is too small for two 96x96 blocks
    (a table row then still has every image; :func:`mean_metrics` leaves NaN out)."""
    h, w = img.shape[:2]
    if (h - 2 * crop_border) // NIQE_BLOCK * ((w - 2 * crop_border) // NIQE_BLOCK) < 2:
        return float("nan")
    return calculate_niqe(img, crop_border=crop_border)


# --------------------------------------------------------------------------- averages

METRIC_KEYS = ("psnr", "ssim", "niqe", "sharpness", "seconds")  # what mean_metrics averages


def mean_metrics(rows: list[dict]) -> dict[str, float]:
    """Average the per-image rows of :func:`evaluate` (or :func:`evaluate_hr`).

    Args:
        rows: dicts holding some of ``"psnr"``, ``"ssim"``, ``"niqe"``, ``"sharpness"``,
            ``"seconds"``; a key is averaged when every row has it.

    Returns:
        ``{key: mean over images, ..., "images": count}`` in the order of ``METRIC_KEYS``
        (means over images, as papers report them). NIQE is averaged over the images that
        have one (NaN rows, too small for NIQE, are left out; NaN if none has). An empty list
        gives ``{"psnr": nan, "ssim": nan, "seconds": nan, "images": 0}``.
    """
    if not rows:
        return {"psnr": float("nan"), "ssim": float("nan"), "seconds": float("nan"), "images": 0}
    means = {}
    for key in METRIC_KEYS:
        if all(key in r for r in rows):
            values = np.array([r[key] for r in rows], dtype=np.float64)
            if key == "niqe":
                values = values[~np.isnan(values)]
            means[key] = float(values.mean()) if values.size else float("nan")
    return {**means, "images": len(rows)}
