"""Our brush RLE against label_studio_sdk.converter.brush, the reference the frontend agrees with."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from label_studio_sdk.converter import brush as sdk

from rpsam2_backend.labelstudio.brush import decode_bytes, encode_bytes, mask_to_rle, mask_to_rle_bytes, rle_to_mask

RNG = np.random.default_rng(20240611)


def _blobs(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (width // 3, height // 2), height // 4, 255, -1)
    cv2.ellipse(mask, (2 * width // 3, height // 3), (width // 8, height // 9), 30, 0, 360, 255, -1)
    cv2.rectangle(mask, (10, height - 40), (width - 10, height - 5), 255, -1)
    return mask


MASKS = {
    "1x1 on": np.ones((1, 1), np.uint8) * 255,
    "1x1 off": np.zeros((1, 1), np.uint8),
    "7x13 random": (RNG.random((7, 13)) < 0.5).astype(np.uint8) * 255,
    "101x257 sparse": (RNG.random((101, 257)) < 0.05).astype(np.uint8) * 255,
    "101x257 dense": (RNG.random((101, 257)) < 0.5).astype(np.uint8) * 255,
    "101x257 all one": np.full((101, 257), 255, np.uint8),  # one run > 2**16 bytes: split
    "1080x1920 blobs": _blobs(1080, 1920),
    "1080x1920 all zero": np.zeros((1080, 1920), np.uint8),
    "1080x1920 all one": np.full((1080, 1920), 255, np.uint8),
    "3x3 single pixel": np.pad(np.full((1, 1), 255, np.uint8), 1),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_bytes_identical_to_sdk_mask2rle(name: str) -> None:
    mask = MASKS[name]
    assert mask_to_rle(mask) == sdk.mask2rle(mask)


@pytest.mark.parametrize("name", ["7x13 random", "101x257 dense", "1080x1920 blobs"])
def test_bool_and_01_masks_are_written_as_255(name: str) -> None:
    # The sdk writes whatever value it is given; Label Studio expects 255 (opaque) foreground.
    mask255 = MASKS[name]
    expected = sdk.mask2rle(mask255)
    assert mask_to_rle(mask255 > 0) == expected
    assert mask_to_rle((mask255 > 0).astype(np.uint8)) == expected
    assert mask_to_rle((mask255 > 0).astype(np.int64) * 7) == expected
    assert mask_to_rle((mask255 > 0).astype(np.float32)) == expected


def test_non_contiguous_mask_encodes_like_its_copy() -> None:
    big = MASKS["101x257 dense"]
    view = big[::2, 1::3]
    assert mask_to_rle(view) == sdk.mask2rle(np.ascontiguousarray(view))


@pytest.mark.parametrize("name", list(MASKS))
def test_round_trip_through_sdk_decoder_and_ours(name: str) -> None:
    mask = MASKS[name]
    height, width = mask.shape
    rle = mask_to_rle(mask > 0)

    rgba = sdk.decode_rle(rle).reshape(height, width, 4)
    for channel in range(4):
        np.testing.assert_array_equal(rgba[:, :, channel], mask)

    ours = rle_to_mask(rle, height, width)
    assert ours.dtype == bool and ours.shape == (height, width)
    np.testing.assert_array_equal(ours, mask > 0)


def test_decode_bytes_matches_sdk_decode_rle() -> None:
    rle = mask_to_rle(MASKS["101x257 dense"])
    np.testing.assert_array_equal(decode_bytes(rle), sdk.decode_rle(rle))


def test_encode_bytes_matches_sdk_encode_rle_with_single_values_and_long_runs() -> None:
    # Unlike masks, arbitrary byte streams have runs of length 1 and of every size class.
    for _ in range(10):
        values = RNG.integers(0, 256, size=int(RNG.integers(1, 400))).astype(np.uint8)
        data = np.repeat(values, RNG.choice([1, 2, 9, 17, 300, 70000], size=values.size))
        rle = encode_bytes(data)
        assert rle == sdk.encode_rle(data)
        np.testing.assert_array_equal(decode_bytes(rle), data)


# --- streams the sdk encoder never writes (Label Studio's frontend does) -----------------------


def _thing_stream(data: np.ndarray, sizes: tuple[int, int, int, int], word: int = 8) -> list[int]:
    """A thi.ng rle-pack style stream built bit by bit: literal blocks for non-repeating stretches,
    repeat tokens for runs, with the given run-length field sizes."""
    bits = [f"{data.size:032b}", f"{word - 1:05b}", *[f"{s - 1:04b}" for s in sizes]]
    i = 0
    while i < data.size:
        j = i
        while j < data.size and data[j] == data[i]:
            j += 1
        literal = j - i == 1
        if literal:
            # extend the literal block while values keep changing
            while j < data.size and (j + 1 >= data.size or data[j] != data[j + 1]):
                j += 1
        n = min(j - i, 1 << max(sizes))
        index = next(k for k, s in enumerate(sizes) if n <= 1 << s)
        bits.append(("0" if literal else "1") + f"{index:02b}" + format(n - 1, f"0{sizes[index]}b"))
        if literal:
            bits.extend(format(int(v), f"0{word}b") for v in data[i : i + n])
        else:
            bits.append(format(int(data[i]), f"0{word}b"))
        i += n
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return [int(text[k : k + 8], 2) for k in range(0, len(text), 8)]


@pytest.mark.parametrize("sizes", [(3, 4, 8, 16), (2, 5, 9, 12), (1, 1, 1, 16)])
def test_decodes_literal_blocks_and_other_run_sizes_like_sdk(sizes: tuple[int, int, int, int]) -> None:
    height, width = 23, 31
    painted = RNG.random((height, width)) < 0.4
    painted[8:20, 3:25] = True
    rgba = np.zeros((height, width, 4), np.uint8)
    # painted pixels: colour + alpha, so neighbouring bytes differ (long literal blocks)
    rgba[painted] = (255, 128, 7, 200)
    rgba[:5] = 0  # and a long uniform run
    flat = rgba.ravel()
    stream = _thing_stream(flat, sizes)
    reference = sdk.decode_rle(stream)
    np.testing.assert_array_equal(reference, flat)  # the helper writes a valid stream
    np.testing.assert_array_equal(decode_bytes(stream), reference)
    expected_mask = reference.reshape(height, width, 4)[..., 3] > 0
    np.testing.assert_array_equal(rle_to_mask(stream, height, width), expected_mask)


def test_decodes_small_word_size() -> None:
    flat = np.tile(np.array([0, 1, 1, 1, 0, 0, 0, 1], np.uint8), 5)
    stream = _thing_stream(flat, (3, 4, 8, 16), word=1)
    np.testing.assert_array_equal(decode_bytes(stream), sdk.decode_rle(stream))
    np.testing.assert_array_equal(rle_to_mask(stream, 2, 5).ravel(), flat[3::4] > 0)


# --- bad input ---------------------------------------------------------------------------------


def test_wrong_size_is_rejected_with_the_sizes() -> None:
    rle = mask_to_rle(MASKS["7x13 random"])
    with pytest.raises(ValueError, match="holds 364 values but a 13x8 RGBA mask needs 416"):
        rle_to_mask(rle, 13, 8)
    with pytest.raises(ValueError, match="7x14"):
        rle_to_mask(rle, 7, 14)


def test_truncated_rle_is_rejected() -> None:
    rle = mask_to_rle(MASKS["101x257 dense"])
    with pytest.raises(ValueError, match="ends early"):
        rle_to_mask(rle[: len(rle) // 2], 101, 257)
    with pytest.raises(ValueError, match="too short"):
        rle_to_mask(rle[:3], 101, 257)


def test_non_byte_values_are_rejected() -> None:
    rle = mask_to_rle(MASKS["7x13 random"])
    with pytest.raises(ValueError, match="0..255"):
        rle_to_mask([*rle[:-1], 256], 7, 13)
    with pytest.raises(ValueError, match="0..255"):
        rle_to_mask(["a", *rle[1:]], 7, 13)


def test_literal_block_past_declared_count_is_rejected() -> None:
    flat = np.arange(12, dtype=np.uint8)  # 12 distinct values: one literal block of 12
    stream = _thing_stream(flat, (3, 4, 8, 16))
    stream[3] = 8  # now declares only 8 values
    with pytest.raises(ValueError, match="past the 8 declared values"):
        decode_bytes(stream)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), (0, 4), (4, 0)])
def test_mask_must_be_non_empty_2d(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="mask must"):
        mask_to_rle(np.zeros(shape, np.uint8))


def test_non_positive_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        rle_to_mask(mask_to_rle(np.ones((2, 2), bool)), 0, 4)


# --- mask_to_rle_bytes: what jobs return (bytes cross Redis; the web side writes them as JSON) ---


def _long_runs_around_noise(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)  # top: one background run far longer than 2**16 bytes
    band = slice(height // 3, height // 2)
    mask[band] = (RNG.random(mask[band].shape) < 0.5) * 255
    mask[2 * height // 3 :] = 255  # bottom: one foreground run to the end, also split into chunks
    return mask


def _one_run_of(pixels: int) -> np.ndarray:
    """A foreground run of ``pixels`` (4 bytes each) between two stretches of salt-and-pepper."""
    noise = (RNG.random(2 * 97) < 0.5).astype(np.uint8) * 255
    noise[96], noise[97] = 0, 0  # the run is bounded by background on both sides
    return np.concatenate([noise[:97], np.full(pixels, 255, np.uint8), noise[97:]])[None, :]


BYTES_MASKS = {
    "375x500 salt and pepper": (RNG.random((375, 500)) < 0.5).astype(np.uint8) * 255,
    "375x500 long runs around noise": _long_runs_around_noise(375, 500),
    "run of exactly 2**16 bytes": _one_run_of(1 << 14),
    "run of 2**16 + 4 bytes": _one_run_of((1 << 14) + 1),
    "run of 3 * 2**16 bytes": _one_run_of(3 << 14),
}


@pytest.mark.parametrize("name", list(BYTES_MASKS))
def test_mask_to_rle_bytes_identical_to_sdk_mask2rle(name: str) -> None:
    mask = BYTES_MASKS[name]
    raw = mask_to_rle_bytes(mask)
    assert type(raw) is bytes
    assert raw == bytes(sdk.mask2rle(mask))
    assert mask_to_rle(mask) == list(raw)
    np.testing.assert_array_equal(rle_to_mask(raw, *mask.shape), mask > 0)

