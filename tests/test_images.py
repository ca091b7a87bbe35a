"""kmodelpy.images reads pictures exactly as ncc infer does (runtime spec §E.3): the reference
cases' raw inputs are the PNGs' planes (uint8) or f32(v)*f32(1/255) (float)."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from refcases import CASES, DATASETS

from kmodelpy.errors import InputError
from kmodelpy.images import list_dataset, load_image_f32, load_image_u8, load_input, load_raw, normalize_f32

PNG = DATASETS / "line160" / "test" / "test000.png"


def test_uint8_image_equals_reference_input():
    want = np.fromfile(CASES / "line_follower_kpu" / "inputs" / "test000.bin", np.uint8).reshape(3, 160, 160)
    assert np.array_equal(load_image_u8(PNG, 3, 160, 160), want)


def test_float_image_equals_reference_input():
    want = np.fromfile(CASES / "line_follower_kpu__float" / "inputs" / "test000.bin", "<f4").reshape(3, 160, 160)
    got = load_image_f32(PNG, 3, 160, 160)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
    norm = load_image_f32(PNG, 3, 160, 160, mean=0.5, std=0.25)
    ref = ((want - np.float32(0.5)).astype(np.float32) / np.float32(0.25)).astype(np.float32)
    assert norm.tobytes() == ref.tobytes()


def test_one_channel_is_the_blue_plane_and_resize_is_inter_linear(tmp_path):
    bgr = cv2.imdecode(np.fromfile(str(PNG), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(load_image_u8(PNG, 1, 160, 160)[0], bgr[:, :, 0])
    small = cv2.resize(bgr, (40, 30), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(load_image_u8(PNG, 3, 30, 40), small[:, :, ::-1].transpose(2, 0, 1))
    with pytest.raises(InputError, match="2 channels"):
        load_image_u8(PNG, 2, 160, 160)


def test_dataset_listing_is_recursive_sorted_and_unicode_safe(tmp_path):
    (tmp_path / "b" / "été").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    shutil.copy(PNG, tmp_path / "b" / "été" / "ü.png")
    shutil.copy(PNG, tmp_path / "a" / "z.png")
    shutil.copy(PNG, tmp_path / "m.png")
    (tmp_path / "a" / "notes.txt").write_text("x")
    files = list_dataset(tmp_path, "image")
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/z.png", "b/été/ü.png", "m.png"]
    assert len(list_dataset(tmp_path, "raw")) == 4
    assert np.array_equal(load_image_u8(files[1], 3, 160, 160), load_image_u8(PNG, 3, 160, 160))
    assert list_dataset(PNG, "image") == [PNG]


def test_raw_samples(tmp_path):
    f = tmp_path / "s.bin"
    np.arange(6, dtype="<f4").tofile(f)
    assert np.array_equal(load_raw(f, np.float32, (1, 2, 3)), np.arange(6, dtype=np.float32).reshape(1, 2, 3))
    with pytest.raises(InputError, match="24 bytes but the model input needs 28"):
        load_raw(f, np.float32, (1, 1, 7))
    # f32 raw inputs get (v - mean) / std, uint8 ones do not (ncc does the same)
    got = load_input(f, "raw", np.float32, (1, 2, 3), mean=1.0, std=2.0)
    assert got.tobytes() == normalize_f32(np.arange(6, dtype=np.float32).reshape(1, 2, 3), 1.0, 2.0).tobytes()
    u = tmp_path / "u.bin"
    u.write_bytes(bytes(range(6)))
    assert load_input(u, "raw", np.uint8, (1, 2, 3), mean=9.0, std=9.0).reshape(-1).tolist() == list(range(6))
