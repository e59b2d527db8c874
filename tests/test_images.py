"""Image preprocessing matches transformers' CLIPImageProcessor; load_images keeps order and reports bad files;
pictures whose decoding or resizing would be unbounded are refused from their header, before a pixel is decoded."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil

from conftest import IMAGES, blank_png
from turkclip.data import images
from turkclip.data.images import ImageRefused, Preprocess, load_image, load_images, try_decode


def smooth(h, w, channels, seed):
    """A smooth random picture (noise resized up): realistic for resampling, unlike pure noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), channels), dtype=np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    return Image.fromarray(small.squeeze(-1) if channels == 1 else small, mode).resize((w, h), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def sample_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    smooth(301, 457, 3, 0).save(folder / "landscape.jpg", quality=90)
    smooth(500, 333, 3, 1).save(folder / "portrait.jpg", quality=90)
    smooth(250, 250, 1, 2).save(folder / "gray.jpg")
    rgba = smooth(180, 260, 4, 3)
    rgba.putalpha(smooth(180, 260, 1, 4))  # a real, varying alpha channel
    rgba.save(folder / "alpha.png")
    smooth(120, 90, 3, 6).quantize(16).save(folder / "palette.png", transparency=0)  # GIF-style transparency
    smooth(20, 30, 3, 5).save(folder / "tiny.png")  # smaller than the crop: upscaled
    return folder


@pytest.mark.parametrize("size", [224, 32])
@pytest.mark.parametrize("name", ["landscape.jpg", "portrait.jpg", "gray.jpg", "alpha.png", "palette.png", "tiny.png"])
def test_matches_clip_image_processor(sample_images, name, size):
    reference = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    with Image.open(sample_images / name) as im:
        expected = reference(im, return_tensors="pt")["pixel_values"]
    pre = Preprocess(size=size)
    ours = pre.normalize(torch.from_numpy(load_image(sample_images / name, size))[None])
    assert ours.shape == expected.shape == (1, 3, size, size)
    assert torch.allclose(ours, expected.float(), atol=1e-5, rtol=0), (ours - expected).abs().max()


def test_matches_clip_image_processor_on_a_real_photo():
    path = IMAGES / "1000268201_693b08cb0e.jpg"
    if not path.exists():
        pytest.skip("real data not found: this test needs the project's ../shared folder")
    with Image.open(path) as im:
        expected = CLIPImageProcessorPil()(im, return_tensors="pt")["pixel_values"]
    ours = Preprocess().normalize(torch.from_numpy(load_image(path, 224))[None])
    assert torch.allclose(ours, expected.float(), atol=1e-5, rtol=0)


def test_from_processor_reads_size_and_statistics():
    processor = CLIPImageProcessorPil(crop_size={"height": 64, "width": 64}, image_mean=[0.5, 0.5, 0.5],
                                      image_std=[0.25, 0.25, 0.25])
    pre = Preprocess.from_processor(processor, image_size=224)
    assert pre == Preprocess(size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert Preprocess.from_processor(None, image_size=48) == Preprocess(size=48)


def test_load_images_keeps_order_and_reports_bad_ones(tiny_images):
    (tiny_images / "broken.jpg").write_bytes(b"this is not a jpeg")
    (tiny_images / "empty.jpg").write_bytes(b"")
    names = ["05.jpg", "broken.jpg", "00.jpg", "missing.jpg", "11.jpg", "empty.jpg", "03.jpg"]
    pixels, kept, bad = load_images(tiny_images, names, size=16, workers=3)
    assert kept == [0, 2, 4, 6]
    assert pixels.dtype == torch.uint8 and pixels.shape == (4, 3, 16, 16)
    for row, i in enumerate(kept):
        assert torch.equal(pixels[row], torch.from_numpy(load_image(tiny_images / names[i], 16)))
    assert [name for name, _ in bad] == ["broken.jpg", "missing.jpg", "empty.jpg"]
    problems = dict(bad)
    assert problems["missing.jpg"] == "missing" and problems["empty.jpg"] == "empty file"
    assert problems["broken.jpg"].startswith("unreadable")


def test_a_one_pixel_wide_png_is_refused_before_it_is_resized(tiny_images):
    """1×300000 pixels in 661 bytes: resized short side first it would be 224×67 million pixels (15 GB)."""
    thin = blank_png(1, 300_000)
    assert len(thin) < 2000
    with pytest.raises(ImageRefused, match=r"1×300000 pixels: longer than 50:1"):
        load_image(io.BytesIO(thin), 224)
    assert try_decode(thin, 224).startswith("refused (1×300000 pixels")
    (tiny_images / "thin.png").write_bytes(thin)
    (tiny_images / "wide.png").write_bytes(blank_png(5000, 20))  # 250:1
    pixels, kept, bad = load_images(tiny_images, ["00.jpg", "thin.png", "wide.png", "01.jpg"], size=16, workers=2)
    assert kept == [0, 3] and pixels.shape == (2, 3, 16, 16)
    assert [name for name, _ in bad] == ["thin.png", "wide.png"] and all(p.startswith("refused") for _, p in bad)


def test_a_panorama_within_the_aspect_bound_is_read():
    panorama = load_image(io.BytesIO(blank_png(2000, 50)), 16)  # 40:1
    assert panorama.shape == (3, 16, 16) and panorama.max() == 0


def test_too_many_source_pixels_are_refused_from_the_header():
    """8000×8000 (64 MP) in 8 KB: decoded it would hold 64 MB (192 MB as RGB) before any resize."""
    bomb = blank_png(8000, 8000)
    assert len(bomb) < 20_000
    with pytest.raises(ImageRefused, match=r"8000×8000 pixels \(64 MP\): more than the 40 MP"):
        load_image(io.BytesIO(bomb), 224)


def test_a_jpeg_above_the_pixel_bound_is_decoded_at_a_reduced_scale(monkeypatch):
    """JPEGs are not refused for their size: the DCT decodes them at 1/2, 1/4 or 1/8 scale, no smaller than
    the resize needs. (The bound is lowered here so that a small test picture is above it.)"""
    picture = smooth(480, 640, 3, 7)
    jpeg, png = io.BytesIO(), io.BytesIO()
    picture.save(jpeg, "JPEG", quality=95)
    picture.save(png, "PNG")
    full = load_image(io.BytesIO(jpeg.getvalue()), 32).astype(np.int16)
    monkeypatch.setattr(images, "MAX_SOURCE_PIXELS", 20_000)  # 640×480 is 307200; 1/8 scale: 80×60 = 4800
    reduced = load_image(io.BytesIO(jpeg.getvalue()), 32).astype(np.int16)
    assert reduced.shape == (3, 32, 32) and not np.array_equal(reduced, full)  # the draft path really ran
    assert np.abs(reduced - full).mean() < 6  # and sees the same picture
    with pytest.raises(ImageRefused, match="more than the 0.02 MP"):  # a PNG has no reduced decode
        load_image(io.BytesIO(png.getvalue()), 32)


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "ICO"])
def test_formats_other_than_photo_formats_are_not_opened(fmt):
    data = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(data, fmt)
    assert try_decode(data.getvalue(), 16) == "unreadable (not a JPEG, PNG, WebP, BMP or GIF image)"


def test_commands_given_a_refused_photo_answer_one_line(tiny_model, tmp_path, capsys):
    from turkclip_train.cli import main

    thin = tmp_path / "thin.png"
    thin.write_bytes(blank_png(1, 300_000))
    for argv in (["predict", "--model", str(tiny_model), str(thin), "bir kedi"],
                 ["classify", "--model", str(tiny_model), str(thin), "--labels", "kedi,köpek"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "thin.png: refused (1×300000 pixels: longer than 50:1" in err, err
