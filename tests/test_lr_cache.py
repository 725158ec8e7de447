"""The LR images a test list makes (MATLAB imresize, cached beside the lists) follow their HR file:
an HR edited anywhere, not only in its first row, gets its LR made again."""
from __future__ import annotations

import numpy as np

from create_data_lists import build_list, lr_cache_key
from imresize import imresize
from utils import read_image, save_image


def _lr_of(folder, out) -> np.ndarray:
    images, skipped = build_list([folder], "mine", 4, training=False, output_folder=out, show_progress=False)
    assert not skipped and len(images) == 1 and images[0]["lr"]
    return read_image(images[0]["lr"])


def test_an_hr_edited_below_its_first_row_gets_a_new_lr(tmp_path):
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    folder, out = tmp_path / "hr", tmp_path / "lists"
    save_image(hr, folder / "photo.png")
    assert np.array_equal(_lr_of(folder, out), imresize(hr, output_shape=(24, 32)))

    edited = hr.copy()
    edited[60:64, 40:80] = 255 - edited[60:64, 40:80]  # rows 60-63 only: the first row is untouched
    save_image(edited, folder / "photo.png")
    lr = _lr_of(folder, out)
    assert np.array_equal(lr, imresize(edited, output_shape=(24, 32)))  # made again, not the cached one
    assert not np.array_equal(lr, imresize(hr, output_shape=(24, 32)))


def test_the_cache_key_covers_every_pixel():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    keys = {lr_cache_key(hr, 4)}
    for y, x in ((0, 0), (47, 39), (24, 0), (0, 39)):
        other = hr.copy()
        other[y, x, 2] ^= 1
        keys.add(lr_cache_key(other, 4))
    assert len(keys) == 5
    assert lr_cache_key(hr, 4) == lr_cache_key(hr.copy(), 4)  # and only the pixels: a copy keeps the key
