"""Tests for imresize.py: MATLAB exactness, semantics, other methods, torch path."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import imresize as imr
from imresize import imresize
from utils import read_image

RNG = np.random.default_rng(0)


def _benchmark_pairs(root: Path):
    pairs = sorted(root.glob("*/image_SRF_*/*_HR.png"))
    assert pairs, f"no HR/LR pairs found under {root}"
    for hr_path in pairs:
        scale = int(hr_path.name.split("_SRF_")[1].split("_")[0])
        yield hr_path, hr_path.with_name(hr_path.name.replace("_HR", "_LR")), scale


# --------------------------------------------------------------- MATLAB acceptance
def _check_matlab_lr_files(root: Path, scales: tuple[int, ...]) -> int:
    """imresize(hr, 1/s) against every MATLAB LR file under ``root`` at ``scales``; returns the count."""
    n_images = 0
    failures = []
    for hr_path, lr_path, scale in _benchmark_pairs(root):
        if scale not in scales:
            continue
        hr = read_image(hr_path, keep_gray=True)
        lr = read_image(lr_path, keep_gray=True)
        out = imresize(hr, 1 / scale)
        n_images += 1
        if out.dtype != np.uint8 or out.shape != lr.shape:
            failures.append(f"{hr_path.name}: got {out.dtype} {out.shape}, want uint8 {lr.shape}")
        elif not np.array_equal(out, lr):
            failures.append(f"{hr_path.name}: {(out != lr).sum()} of {lr.size} values differ")
    assert not failures, "\n".join(failures)
    return n_images


def test_matches_matlab_lr_files_exactly(benchmark_dir):
    """imresize(hr, 1/4) reproduces every pixel of MATLAB's x4 LR files (bundled Set5, Set14)."""
    assert _check_matlab_lr_files(benchmark_dir, (4,)) == 5 + 14


def test_matches_matlab_lr_files_exactly_x2_x3(shared_benchmark_dir):
    """The same at x2 and x3 (the team's copy; only x4 is bundled)."""
    assert _check_matlab_lr_files(shared_benchmark_dir, (2, 3)) == 2 * (5 + 14)


def test_benchmark_border_needs_clamping_not_mirroring(benchmark_dir):
    """A mirroring implementation would miss the MATLAB border pixels of these files."""
    hr_path, lr_path, scale = next(p for p in _benchmark_pairs(benchmark_dir) if p[2] == 4)
    hr = read_image(hr_path, keep_gray=True)
    lr = read_image(lr_path, keep_gray=True)
    mirrored = _mirror_resize_uint8(hr, 1 / scale)
    assert not np.array_equal(mirrored, lr)
    assert np.array_equal(imresize(hr, 1 / scale), lr)


def _mirror_resize_uint8(img: np.ndarray, scale: float) -> np.ndarray:
    """Bicubic resize with symmetric (mirror) border handling, as many ports do."""
    x = img
    for axis in (0, 1):
        n = x.shape[axis]
        idx, w = imr._contributions(n, math.ceil(scale * n), scale, "bicubic", True)
        # Rebuild unclamped indices from the kernel geometry, then mirror them.
        out_len = idx.shape[0]
        u = np.arange(1, out_len + 1) / scale + 0.5 * (1 - 1 / scale)
        width = 4 / scale
        left = np.floor(u - width / 2)
        raw = left[:, None] + np.arange(math.ceil(width) + 2)[None, :]
        weights = scale * imr._cubic(scale * (u[:, None] - raw))
        weights /= weights.sum(1, keepdims=True)
        aux = np.concatenate([np.arange(n), np.arange(n - 1, -1, -1)])
        mirrored = aux[np.mod(raw.astype(np.int64) - 1, 2 * n)]
        x = np.clip(np.floor(imr._resize_axis_reference(x, axis, mirrored, weights) + 0.5), 0, 255).astype(np.uint8)
    return x


def test_clamps_border_on_a_step_edge():
    """Clamping replicates the edge pixel; mirroring would pull in the neighbour.

    Image: a single bright column at the left edge. With clamping every out-of-range
    tap reads the bright column; with mirroring the taps at -1, -2 read dark pixels.
    """
    img = np.zeros((8, 16))
    img[:, 0] = 1.0
    out = imresize(img, output_shape=(8, 4))  # shrink width by 4: 16-tap kernel
    idx, w = imr._contributions(16, 4, 0.25, "bicubic", True)
    # Clamped expectation: weight of all taps that land on column 0.
    expected_first = w[0][idx[0] == 0].sum()
    np.testing.assert_allclose(out[:, 0], expected_first, rtol=0, atol=1e-12)
    # Independent check of the geometry: taps for output column 1 span u = 2.5 +- 8,
    # i.e. source columns -5..10 (1-based); columns <= 1 all read the edge pixel.
    u = 2.5
    cols = np.arange(-5, 11)
    k = 0.25 * imr._cubic(0.25 * (u - cols))
    k /= k.sum()
    np.testing.assert_allclose(out[0, 0], k[cols <= 1].sum(), atol=1e-12)
    mirror_value = k[(cols == 1) | (cols == 0)].sum()  # mirror: 0 -> 1, -1 -> 2, ...
    assert abs(out[0, 0] - mirror_value) > 1e-3


# --------------------------------------------------------------- semantics
def test_output_sizes():
    img = np.zeros((17, 10, 3), np.uint8)
    assert imresize(img, 0.5).shape == (9, 5, 3)  # ceil(8.5), ceil(5)
    assert imresize(img, 1 / 3).shape == (6, 4, 3)
    assert imresize(img, 2).shape == (34, 20, 3)
    assert imresize(img, (0.5, 2)).shape == (9, 20, 3)
    assert imresize(img, output_shape=(7, 13)).shape == (7, 13, 3)
    assert imresize(img[:, :, 0], 4).shape == (68, 40)


def test_dtypes_and_float_path_is_not_rounded():
    img8 = RNG.integers(0, 256, (13, 11, 3), dtype=np.uint8)
    out8 = imresize(img8, 0.5)
    outf = imresize(img8.astype(np.float64), 0.5)
    assert out8.dtype == np.uint8 and outf.dtype == np.float64
    assert imresize(img8.astype(np.float32), 0.5).dtype == np.float64
    assert not np.allclose(outf, np.round(outf))  # float output keeps fractions
    # Cubic overshoots at a 0/255 step: the float path is not clipped, uint8 saturates.
    step = np.zeros((4, 8), np.uint8)
    step[:, 4:] = 255
    up_f = imresize(step.astype(float), 2)
    assert up_f.min() < 0 and up_f.max() > 255
    up_8 = imresize(step, 2)
    assert up_8.min() == 0 and up_8.max() == 255
    # uint8 rounds each pass, so it differs from rounding only at the end somewhere,
    # but never by more than one level per pass.
    assert np.abs(out8.astype(float) - np.clip(outf, 0, 255)).max() <= 2
    assert imresize(img8, 1) is not img8


def test_uint8_rounds_each_pass():
    """The uint8 result equals: pass 1 in float, round+saturate, pass 2, round."""
    img8 = RNG.integers(0, 256, (20, 24), dtype=np.uint8)
    # Height (scale 0.5) comes before width (scale 0.75): increasing scale.
    first = imresize(img8.astype(float), output_shape=(10, 24))
    first8 = np.clip(np.floor(first + 0.5), 0, 255).astype(np.uint8)
    second = imresize(first8.astype(float), output_shape=(10, 18))
    expected = np.clip(np.floor(second + 0.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(imresize(img8, output_shape=(10, 18)), expected)
    # ...and not the other order (width first), which gives a different answer here.
    w_first = np.clip(np.floor(imresize(img8.astype(float), output_shape=(20, 18)) + 0.5), 0, 255)
    other = np.clip(np.floor(imresize(w_first, output_shape=(10, 18)) + 0.5), 0, 255)
    assert not np.array_equal(other, expected)


def test_constant_image_stays_constant():
    for method in imr.METHODS:
        img = np.full((9, 14, 3), 77, np.uint8)
        for scale in (0.3, 0.5, 1, 1.7, 3):
            out = imresize(img, scale, method=method)
            assert (out == 77).all(), (method, scale)


def test_identity_at_scale_one():
    img = RNG.random((7, 9))
    for method in ("bicubic", "bilinear", "box", "nearest", "lanczos2", "lanczos3"):
        np.testing.assert_allclose(imresize(img, 1, method=method), img, atol=1e-12)


# --------------------------------------------------------------- other methods
def test_box_half_is_block_mean():
    img = RNG.random((12, 10, 3))
    out = imresize(img, 0.5, method="box")
    blocks = img.reshape(6, 2, 5, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(out, blocks, atol=1e-12)


def test_nearest_x2_replicates_pixels():
    img = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = imresize(img, 2, method="nearest")
    np.testing.assert_array_equal(out, img.repeat(2, 0).repeat(2, 1))
    # Shrinking by 2 picks every other pixel (nearest never antialiases).
    big = RNG.integers(0, 256, (10, 14), dtype=np.uint8)
    out = imresize(big, 0.5, method="nearest")
    # u = 2x - 0.5 (1-based) -> source pixel 2x-1 with the [-0.5, 0.5) kernel: rows 1, 3, ...
    np.testing.assert_array_equal(out, big[1::2, 1::2])


def test_bilinear_upscale_interpolates_linearly():
    ramp = np.tile(np.arange(6, dtype=float), (4, 1))  # value = column index
    out = imresize(ramp, output_shape=(4, 12), method="bilinear")
    # Output column j (1-based) samples u = j/2 + 0.25 (1-based) -> value u - 1,
    # clamped to [0, 5] at the borders (edge replication).
    u = np.arange(1, 13) / 2 + 0.25
    np.testing.assert_allclose(out[0], np.clip(u - 1, 0, 5), atol=1e-12)


@pytest.mark.parametrize("method", list(imr.METHODS))
@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.7, 1.5, 4])
def test_weights_sum_to_one(method, scale):
    idx, w = imr._contributions(37, math.ceil(37 * scale), scale, method, True)
    np.testing.assert_allclose(w.sum(1), 1, atol=1e-12)
    assert idx.min() >= 0 and idx.max() <= 36
    assert (w != 0).any(axis=0).all()  # all-zero columns dropped


def test_kernels_known_values():
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    # Keys cubic, a = -0.5
    np.testing.assert_allclose(imr._cubic(x), [1, 0.5625, 0, -0.0625, 0, 0], atol=1e-15)
    np.testing.assert_allclose(imr._triangle(x), [1, 0.5, 0, 0, 0, 0], atol=1e-15)
    np.testing.assert_allclose(imr._box(np.array([-0.5, 0.0, 0.49, 0.5])), [1, 1, 1, 0])
    np.testing.assert_allclose(imr._lanczos2(np.array([0.0, 1.0, 2.0, 3.0])), [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(imr._lanczos3(np.array([0.0, 1.0, 2.0, 3.0])), [1, 0, 0, 0], atol=1e-12)
    # Integer-spaced samples of lanczos kernels sum to about 1 at any phase.
    for kern, a in ((imr._lanczos2, 2), (imr._lanczos3, 3)):
        t = 0.3 + np.arange(-a, a + 1)
        assert abs(kern(t).sum() - 1) < 0.05


# --------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scale=0), "positive"),
        (dict(scale=-2), "positive"),
        (dict(), "exactly one"),
        (dict(scale=2, output_shape=(4, 4)), "exactly one"),
        (dict(scale=2, method="spline"), "bicubic"),
        (dict(output_shape=(0, 4)), "positive"),
        (dict(output_shape=(4,)), "output_shape"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        imresize(np.zeros((8, 8), np.uint8), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="uint8 or float"):
        imresize(np.zeros((8, 8), np.int32), 2)
    with pytest.raises(ValueError, match="HxW"):
        imresize(np.zeros((2, 8, 8, 3)), 2)
    with pytest.raises(ValueError, match="HxW"):
        imresize([[1, 2], [3, 4]], 2)


# --------------------------------------------------------------- fast path == reference
def _reference_imresize(img: np.ndarray, scale: float, method: str) -> np.ndarray:
    """Straight statement of MATLAB's algorithm with the slow reference pass."""
    is_uint8 = img.dtype == np.uint8
    x = img.astype(np.float64)
    in_hw = img.shape[:2]
    out_hw = [math.ceil(scale * n) for n in in_hw]
    for axis in (0, 1):  # equal scales: height first
        idx, w = imr._contributions(in_hw[axis], out_hw[axis], scale, method, method != "nearest")
        x = imr._resize_axis_reference(x, axis, idx, w)
        if is_uint8:
            x = np.clip(np.floor(x + 0.5), 0, 255)
    return x.astype(np.uint8) if is_uint8 else x


@pytest.mark.parametrize("method", ["bicubic", "bilinear", "box", "nearest", "lanczos2", "lanczos3"])
@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 0.5, 0.37, 2, 3, 4])
def test_fast_path_equals_reference(method, scale):
    """uint8: bit-identical to the tap-by-tap float64 reference; float: to round-off."""
    img8 = RNG.integers(0, 256, (23, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imresize(img8, scale, method=method), _reference_imresize(img8, scale, method))
    imgf = RNG.random((23, 30))
    np.testing.assert_allclose(imresize(imgf, scale, method=method), _reference_imresize(imgf, scale, method),
                               rtol=0, atol=1e-12)


def _matlab_bicubic_1d(row: list[float], scale: float, out_len: int) -> list[float]:
    """One line resized as imresize.m does it, written out pixel by pixel (no code shared with
    imresize.py): a shrink stretches the cubic kernel by 1/scale (antialiasing, any scale < 1)."""
    def cubic(t: float) -> float:
        a = abs(t)
        if a <= 1:
            return 1.5 * a**3 - 2.5 * a**2 + 1
        if a <= 2:
            return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
        return 0.0

    shrink = scale < 1
    width = 4.0 / scale if shrink else 4.0
    out = []
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = []
        for j in range(left, left + math.ceil(width) + 2):
            t = u - j
            weight = scale * cubic(scale * t) if shrink else cubic(t)
            taps.append((weight, min(max(j, 1), len(row)) - 1))  # clamped borders
        total = sum(w for w, _ in taps)
        out.append(sum(w * row[i] for w, i in taps) / total)
    return out


@pytest.mark.parametrize("scale", [0.75, 0.6, 0.9])
def test_a_non_integer_shrink_is_antialiased_as_matlab(scale):
    """Shrinks between 0.5 and 1 are antialiased too (imresize.m stretches the kernel for every
    scale < 1); checked against the formula computed pixel by pixel."""
    img = np.random.default_rng(5).random((20, 28))
    out = imresize(img, scale)
    h, w = math.ceil(scale * 20), math.ceil(scale * 28)
    cols = np.array([_matlab_bicubic_1d(list(img[:, c]), scale, h) for c in range(28)]).T  # height first
    expected = np.array([_matlab_bicubic_1d(list(cols[r]), scale, w) for r in range(h)])
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    # the kernel without stretching gives another image: the check above tells them apart
    assert not np.allclose(imresize(img, scale, antialiasing=False), expected, atol=1e-3)


def test_ties_round_half_away_from_zero():
    """2.5 -> 3 and 3.5 -> 4 (MATLAB), not to even (numpy's round)."""
    img = np.array([[2, 3, 3, 4]], np.uint8).repeat(2, 0)
    out = imresize(img, output_shape=(2, 2), method="box")  # block means 2.5, 3.5
    np.testing.assert_array_equal(out, [[3, 4], [3, 4]])


# --------------------------------------------------------------- torch path
@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 0.6, 2, 3.5])
def test_torch_matches_numpy_float(scale):
    batch = torch.rand(2, 3, 21, 17)  # odd sizes, batch of 2
    out = imresize(batch, scale)
    assert out.dtype == torch.float32 and out.shape == (2, 3, math.ceil(21 * scale), math.ceil(17 * scale))
    for n in range(2):
        ref = imresize(batch[n].permute(1, 2, 0).double().numpy(), scale)
        np.testing.assert_allclose(out[n].permute(1, 2, 0).numpy(), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["bilinear", "box", "nearest", "lanczos3"])
def test_torch_other_methods_and_shapes(method):
    x = torch.rand(3, 12, 19, dtype=torch.float64)  # CxHxW, float64
    out = imresize(x, output_shape=(5, 40), method=method)
    assert out.shape == (3, 5, 40) and out.dtype == torch.float64
    ref = imresize(x.permute(1, 2, 0).numpy(), output_shape=(5, 40), method=method)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), ref, rtol=0, atol=1e-12)


def test_torch_half_and_errors():
    x = torch.rand(1, 1, 8, 8)
    out = imr.imresize_torch(x.half(), 0.5)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), imresize(x, 0.5), atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="float tensor"):
        imresize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="NxCxHxW or CxHxW"):
        imresize(torch.zeros(8, 8), 2)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(torch.zeros(1, 3, 8, 8), 2, output_shape=(4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_cuda_matches_cpu():
    x = torch.rand(2, 3, 33, 20)
    out = imresize(x.cuda(), 1 / 3)
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), imresize(x, 1 / 3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("scale", [1 / 3, 2.5])
def test_torch_sparse_engine_used_for_gpu(scale):
    """The torch-sparse passes used for GPU tensors, run here on CPU tensors."""
    x = torch.rand(2, 3, 17, 26)
    planes = x.reshape(6, 17, 26)
    oh, ow = math.ceil(17 * scale), math.ceil(26 * scale)
    cpu = torch.device("cpu")
    mh = imr._torch_matrix(17, oh, scale, "bicubic", True, torch.float32, cpu)
    mw = imr._torch_matrix(26, ow, scale, "bicubic", True, torch.float32, cpu)
    out = imr._resize_width_torch(imr._resize_height_torch(planes, mh), mw).view(2, 3, oh, ow)
    torch.testing.assert_close(out, imresize(x, scale), atol=1e-6, rtol=0)


# --------------------------------------------------------------- padding="symmetric"
@pytest.mark.parametrize("scale", [0.5, 0.25, 1 / 3, 3])
def test_symmetric_padding_mirrors_the_source_indices(scale):
    """padding="symmetric" maps outside taps as MATLAB's aux = [1:n, n:-1:1] (np.pad 'symmetric');
    the weights and the taps inside the image are those of the default (clamping)."""
    n = 11
    out = math.ceil(n * scale)
    idx_c, w_c = imr._contributions(n, out, scale, "bicubic", True)
    idx_s, w_s = imr._contributions(n, out, scale, "bicubic", True, "symmetric")
    np.testing.assert_array_equal(w_s, w_c)
    # the unclamped 1-based taps, rebuilt from the clamped ones where they are inside
    x = np.arange(1, out + 1)[:, None]
    width = 4 / scale if scale < 1 else 4
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    full = (left + np.arange(int(math.ceil(width)) + 2)[None, :]).astype(int)
    keep = (imr._cubic((u - full) * min(scale, 1)) != 0).any(axis=0)  # the columns MATLAB keeps
    full = full[:, keep]
    pad = 2 * n
    mirror = np.pad(np.arange(n), pad, mode="symmetric")
    np.testing.assert_array_equal(idx_s, mirror[full - 1 + pad])
    inside = (full >= 1) & (full <= n)
    np.testing.assert_array_equal(idx_s[inside], idx_c[inside])
    assert not np.array_equal(idx_s, idx_c)  # the border taps do differ


def test_symmetric_padding_numpy_and_torch_agree():
    img = RNG.random((40, 52))
    a = imresize(img, 0.5, padding="symmetric")
    assert not np.allclose(a, imresize(img, 0.5))  # borders differ from clamping
    np.testing.assert_allclose(a[3:-3, 3:-3], imresize(img, 0.5)[3:-3, 3:-3], atol=1e-12)  # interior same
    t = imresize(torch.from_numpy(img)[None, None], 0.5, padding="symmetric")[0, 0].numpy()
    np.testing.assert_allclose(t, a, atol=1e-12)
    with pytest.raises(ValueError, match="unknown padding"):
        imresize(img, 0.5, padding="reflect")
