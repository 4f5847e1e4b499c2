"""Label Studio brush RLE, vectorised.

The format is thi.ng ``rle-pack`` over the flat RGBA bytes of the mask (4 bytes per pixel):
a 32-bit value count, a 5-bit word size - 1, four 4-bit run-length-field sizes - 1, then tokens
``[repeat bit][2-bit size index][length - 1][value]`` (a repeat token fills ``length`` copies of one
value; a literal token is followed by ``length`` values).  ``label_studio_sdk.converter.brush``
builds that stream as a Python string of '0'/'1' characters (~17 ms for a 1024² mask); here every
token is built with numpy and the bits are packed in one ``bincount``.

``mask_to_rle`` is byte-identical to ``brush.mask2rle(m)`` where ``m`` holds 0 / 255 (the value
Label Studio's own examples write and the frontend paints at full opacity): nonzero input pixels
become 255 in all four channels, so a 0/1 mask does not end up as a nearly transparent region.
"""

from __future__ import annotations

import numpy as np

from rpsam2_backend.core.errors import BadRequest

# The sdk encoder's fixed parameters: 8-bit words, run-length fields of 3, 4, 8 and 16 bits.
_WORD_BITS = 8
_RLE_SIZES = (3, 4, 8, 16)
_MAX_RUN = 1 << 16
_FOREGROUND = 255



class MalformedRLE(BadRequest, ValueError):
    """Brush RLE that does not decode (a 400 for the web, a ValueError for offline readers)."""

def _pack_tokens(values: np.ndarray, widths: np.ndarray) -> bytes:
    """Concatenate big-endian bit fields (each <= 32 bits) and pad like the sdk.

    The stream is built as 32-bit words: a field lies in one word or straddles two, so it adds
    at most two parts, summed per word with ``bincount`` (fields never overlap, so adding equals
    OR-ing, and a word's sum stays below 2**32: exact in float64).  The sdk always appends
    ``8 - bits % 8`` zero bits, i.e. a whole zero byte when already aligned.
    """
    widths = widths.astype(np.int64)
    ends = np.cumsum(widths)
    starts = ends - widths
    n_bytes = int(ends[-1]) // 8 + 1
    n_words = n_bytes // 4 + 2
    word = starts >> 5
    shift = 32 - (starts & 31) - widths  # < 0: the field's low -shift bits spill into the next word
    values = values.astype(np.uint64)
    head = (values << np.maximum(shift, 0).astype(np.uint64)) >> np.maximum(-shift, 0).astype(np.uint64)
    spill = shift < 0
    tail = (values[spill] << (32 + shift[spill]).astype(np.uint64)) & np.uint64(0xFFFFFFFF)
    packed = np.bincount(word, weights=head.astype(np.float64), minlength=n_words)
    packed += np.bincount(word[spill] + 1, weights=tail.astype(np.float64), minlength=n_words)
    return packed.astype(np.uint32).astype(">u4").tobytes()[:n_bytes]


def _run_tokens(lengths: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sdk's ``encode_rle`` token for each run: (field value, field width) arrays."""
    lengths = lengths.astype(np.int64)
    values = values.astype(np.int64)
    if lengths.max() <= _MAX_RUN:  # one token per run (noisy masks: many runs, none long)
        run_length = length = lengths
        value = values
    else:
        # Runs longer than 2**16 become full 2**16 chunks followed by the remainder, in order.
        chunks = np.where(lengths > _MAX_RUN, (lengths - 1) // _MAX_RUN, 0)
        per_run = chunks + 1
        run_of_token = np.repeat(np.arange(len(lengths)), per_run)
        first_token = np.cumsum(per_run) - per_run
        position = np.arange(len(run_of_token)) - first_token[run_of_token]
        is_chunk = position < chunks[run_of_token]
        run_length = lengths[run_of_token]
        length = np.where(is_chunk, _MAX_RUN, run_length - chunks[run_of_token] * _MAX_RUN)
        value = values[run_of_token]

    # Size class is chosen from the whole run's length (a split remainder stays in class 3).
    size_index = (run_length > 8).astype(np.int64) + (run_length > 16) + (run_length > 256)
    size_bits = np.asarray(_RLE_SIZES, dtype=np.int64)[size_index]
    repeat = (run_length > 1).astype(np.int64)
    width = 1 + 2 + size_bits + _WORD_BITS
    field = (
        (repeat << (2 + size_bits + _WORD_BITS))
        | (size_index << (size_bits + _WORD_BITS))
        | ((length - 1) << _WORD_BITS)
        | value
    )
    return field, width


def encode_bytes(data: np.ndarray) -> list[int]:
    """RLE of a flat uint8 array, identical to ``label_studio_sdk.converter.brush.encode_rle``."""
    data = np.asarray(data)
    if data.ndim != 1 or data.size == 0:
        raise ValueError(f"encode_bytes needs a non-empty 1-D array, got shape {data.shape}")
    if data.size >= 1 << 32:
        raise ValueError(f"{data.size} values do not fit the format's 32-bit count")
    if data.dtype.kind not in "biu" or int(data.min()) < 0 or int(data.max()) > 255:
        raise ValueError("encode_bytes needs integer values 0..255 (8-bit words)")
    change = np.flatnonzero(data[1:] != data[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [data.size]]))
    return list(_encode_runs_bytes(data.size, lengths, data[starts]))


def _encode_runs_bytes(count: int, lengths: np.ndarray, values: np.ndarray) -> bytes:
    header_values = np.array([count, _WORD_BITS - 1, *[s - 1 for s in _RLE_SIZES]], dtype=np.int64)
    header_widths = np.array([32, 5, 4, 4, 4, 4], dtype=np.int64)
    fields, widths = _run_tokens(lengths, values)
    return _pack_tokens(np.concatenate([header_values, fields]), np.concatenate([header_widths, widths]))


def _run_starts(flat: np.ndarray) -> np.ndarray:
    """Indices where the foreground flag (nonzero) changes, plus 0.

    One vectorised comparison of neighbouring bytes: it streams the mask once and costs the same
    for smooth and speckled masks (an earlier eight-pixels-per-uint64 variant was no faster on
    smooth Full-HD masks and seven times slower on speckled ones).  Raw uint8 values are
    compared, so their change points are then checked on the flag (bool and 0/1 masks are exact).
    """
    if flat.dtype == np.bool_:
        raw, exact = flat.view(np.uint8), True
    elif flat.dtype == np.uint8:
        raw, exact = flat, False
    else:
        raw, exact = (flat != 0).view(np.uint8), True
    raw = np.ascontiguousarray(raw)
    changes = np.flatnonzero(raw[1:] != raw[:-1]) + 1
    if not exact:
        changes = changes[(raw[changes] != 0) != (raw[changes - 1] != 0)]
    return np.concatenate([np.zeros(1, dtype=np.int64), changes])


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Brush RLE of a 2-D mask (bool or integer; nonzero = foreground, written as 255 RGBA)."""
    return list(mask_to_rle_bytes(mask))


def mask_to_rle_bytes(mask: np.ndarray) -> bytes:
    """``mask_to_rle`` as bytes: what crosses Redis (as a list of ints it pickles to twice the size,
    and pickling and unpickling it take milliseconds for a speckled mask)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (height, width), got shape {mask.shape}")
    if mask.size == 0:
        raise ValueError(f"mask must not be empty, got shape {mask.shape}")
    flat = mask.ravel()
    if flat.size * 4 >= 1 << 32:
        raise ValueError(f"mask of shape {mask.shape} is too large for the 32-bit value count")
    # Runs of pixels; every pixel is 4 equal bytes, so byte runs are exactly 4x pixel runs.
    starts = _run_starts(flat)
    lengths = np.diff(np.concatenate([starts, [flat.size]])) * 4
    values = (flat[starts] != 0).astype(np.int64) * _FOREGROUND
    return _encode_runs_bytes(flat.size * 4, lengths, values)


def _read_bits(data: bytes, pos: int, n: int) -> int:
    """The ``n``-bit (<= 32) big-endian field at bit ``pos`` of ``data`` (padded with 5 bytes)."""
    byte = pos >> 3
    return (int.from_bytes(data[byte : byte + 5], "big") >> (40 - (pos & 7) - n)) & ((1 << n) - 1)


def _read_block(data: bytes, pos: int, count: int, n: int) -> np.ndarray:
    """``count`` consecutive ``n``-bit fields starting at bit ``pos`` (a literal block)."""
    first = pos >> 3
    last = (pos + count * n + 7) >> 3
    bits = np.unpackbits(np.frombuffer(data[first:last], dtype=np.uint8))
    offset = pos & 7
    fields = bits[offset : offset + count * n].reshape(count, n).astype(np.int64)
    return fields @ (1 << np.arange(n - 1, -1, -1, dtype=np.int64))


def _decode_runs(rle: list[int] | bytes) -> tuple[int, np.ndarray, np.ndarray]:
    """(declared value count, segment values, segment lengths) of a brush RLE stream.

    Works for any stream the thi.ng format allows (Label Studio's frontend writes literal blocks
    and may use other run-length sizes).  The token walk is inherently sequential, so it is a
    tight Python loop reading one 64-bit window per run token; the filling is numpy.
    """
    if not isinstance(rle, bytes | bytearray | list | tuple):  # bytes(n) would allocate n bytes
        raise MalformedRLE(f"RLE must be a list of integers 0..255, got {type(rle).__name__}")
    try:
        raw = bytes(rle)
    except (TypeError, ValueError) as exc:
        raise MalformedRLE(f"RLE must be a list of integers 0..255: {exc}") from None
    if len(raw) < 7:
        raise MalformedRLE(f"RLE is too short for its header ({len(raw)} bytes, need at least 7)")
    total = len(raw) * 8
    data = raw + b"\0" * 8
    count = _read_bits(data, 0, 32)
    word_bits = _read_bits(data, 32, 5) + 1
    if word_bits > 8:
        raise MalformedRLE(f"RLE word size {word_bits} bits is not a byte mask (expected <= 8)")
    sizes = [_read_bits(data, 37 + 4 * k, 4) + 1 for k in range(4)]
    word_mask = (1 << word_bits) - 1
    pos = 53

    def ends_early(needed: int) -> MalformedRLE:
        return MalformedRLE(f"RLE data ends early (needs {needed} bits, has {total})")

    # Runs are collected as plain ints and flushed into arrays around each long literal block, so
    # a stream of thousands of runs costs one np.repeat, not thousands of small arrays.
    parts_values: list[np.ndarray] = []
    parts_lengths: list[np.ndarray] = []
    run_values: list[int] = []
    run_lengths: list[int] = []
    from_bytes = int.from_bytes
    i = 0
    while i < count:
        # A token is at most 1 + 2 + 16 + 8 = 27 bits, so one 64-bit window holds all of it.
        byte = pos >> 3
        window = from_bytes(data[byte : byte + 8], "big")
        left = 64 - (pos & 7)
        head = (window >> (left - 3)) & 7
        size = sizes[head & 3]
        n = ((window >> (left - 3 - size)) & ((1 << size) - 1)) + 1
        if head & 4:
            pos += 3 + size + word_bits
            if pos > total:
                raise ends_early(pos)
            # Like the sdk (a numpy slice) and thi.ng (TypedArray.fill), a run past the end is cut.
            n = min(n, count - i)
            run_values.append((window >> (left - 3 - size - word_bits)) & word_mask)
            run_lengths.append(n)
        else:
            pos += 3 + size
            if i + n > count:
                raise MalformedRLE(f"RLE literal block runs past the {count} declared values")
            if pos + n * word_bits > total:
                raise ends_early(pos + n * word_bits)
            if n < 8:
                for _ in range(n):
                    run_values.append(_read_bits(data, pos, word_bits))
                    run_lengths.append(1)
                    pos += word_bits
            else:
                parts_values += [np.asarray(run_values, dtype=np.int64), _read_block(data, pos, n, word_bits)]
                parts_lengths += [np.asarray(run_lengths, dtype=np.int64), np.ones(n, dtype=np.int64)]
                run_values, run_lengths = [], []
                pos += n * word_bits
        i += n
    parts_values.append(np.asarray(run_values, dtype=np.int64))
    parts_lengths.append(np.asarray(run_lengths, dtype=np.int64))
    return count, np.concatenate(parts_values), np.concatenate(parts_lengths)


def decode_bytes(rle: list[int] | bytes) -> np.ndarray:
    """Flat decoded values (uint8), identical to ``label_studio_sdk.converter.brush.decode_rle``."""
    _, values, lengths = _decode_runs(rle)
    return np.repeat(values.astype(np.uint8), lengths)


def rle_to_mask(rle: list[int] | bytes, height: int, width: int) -> np.ndarray:
    """Bool (height, width) mask from brush RLE: the alpha channel, nonzero = foreground."""
    if height <= 0 or width <= 0:
        raise MalformedRLE(f"mask size must be positive, got height={height} width={width}")
    count, values, lengths = _decode_runs(rle)
    expected = height * width * 4
    if count != expected:
        raise MalformedRLE(
            f"RLE holds {count} values but a {height}x{width} RGBA mask needs {expected} "
            f"(wrong original_width/original_height?)"
        )
    # Alpha is what Label Studio draws and what the sdk's decode_from_annotation keeps.  A segment
    # of bytes [s, e) holds the alpha byte (4p + 3) of pixels p in [s // 4, e // 4), so the mask is
    # built per pixel without expanding all four channels.
    ends = np.cumsum(lengths)
    pixels = ends // 4 - (ends - lengths) // 4
    return np.repeat(values != 0, pixels).reshape(height, width)
