"""save_sr_set names its files after the images of a data list, which anyone can write: a name
that climbs out of the output folder, or holds a path, must still land inside it."""
from __future__ import annotations

import numpy as np
import pytest

from notebook_helpers import save_sr_set, sr_filename


def _set(names: list[str]) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"name": name, "lr": rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)} for name in names]


@pytest.mark.parametrize("name", ["../../../../tmp/x/escaped_img", "../escaped_img", "/abs/escaped_img",
                                  "sub/dir/escaped_img", "..\\..\\escaped_img", "..", ".hidden"])
def test_image_names_cannot_leave_the_output_folder(tmp_path, name):
    out = tmp_path / "a" / "b" / "out"
    outputs = save_sr_set(_set([name, "baby"]), {"bicubic": None}, out, 4, progress=False)
    assert list(outputs) == [name, "baby"]  # results keep the names of the set
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == 2 and all(p.parent == out for p in written), written
    assert (out / "baby_bicubic_x4.png").is_file()
    assert not any(p.name.startswith(".") for p in written)


def test_sr_filename_is_a_plain_file_name():
    assert sr_filename("baby", "SRGAN", 4) == "baby_srgan_x4.png"
    for name in ("../../x", "/etc/passwd", "a/b", "..", "", "c:\\x"):
        file_name = sr_filename(name, "SRGAN", 4)
        assert "/" not in file_name and "\\" not in file_name and not file_name.startswith("."), file_name


def test_two_names_that_clean_to_the_same_file_are_refused(tmp_path):
    with pytest.raises(ValueError, match="same file"):
        save_sr_set(_set(["a/x", "b/x"]), {"bicubic": None}, tmp_path / "out", 4, progress=False)
    assert not (tmp_path / "out").exists()
