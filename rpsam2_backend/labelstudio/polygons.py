"""A binary mask -> Label Studio ``polygonlabels`` outlines (percent points), for polygon projects.

Label Studio polygons are single rings: no holes, one region per ring.  So:

* only **outer** contours are traced: holes inside a part are filled (a ring-shaped mask becomes a
  disc);
* each separate part becomes its own polygon (its own region), largest first; parts smaller than
  ``MIN_PART_PX`` pixels or than ``MIN_PART_FRACTION`` of the largest part are dropped (speckle),
  except the largest part itself (a small object still gets its polygon), and at most
  ``MAX_PARTS`` are kept;
* each ring is simplified with Douglas-Peucker (``cv2.approxPolyDP``) at ``TOLERANCE_PX`` pixels:
  no point of the traced outline is further than that from the polygon;
* points are the centres of the part's boundary pixels, in percent of the image (pixel column
  ``c`` -> ``(c + 0.5) / W * 100``), clamped to 0..100; every ring has at least 3 points and does
  not repeat its first point at the end (Label Studio closes it itself).
"""

from __future__ import annotations

import cv2
import numpy as np

TOLERANCE_PX = 1.5
MIN_PART_PX = 20
MIN_PART_FRACTION = 0.05
MAX_PARTS = 10

Polygon = list[list[float]]  # [[x %, y %], ...]


def _ring(contour: np.ndarray, tolerance: float) -> np.ndarray:
    simplified = cv2.approxPolyDP(contour, tolerance, True)[:, 0, :]
    if len(simplified) < 3:
        # A one-pixel-wide sliver simplifies to a segment: outline its rotated bounding rectangle,
        # at least one pixel wide so that the ring encloses something.
        centre, (w, h), angle = cv2.minAreaRect(contour)
        simplified = cv2.boxPoints((centre, (max(w, 1.0), max(h, 1.0)), angle))
    keep = np.ones(len(simplified), dtype=bool)
    keep[1:] = np.any(simplified[1:] != simplified[:-1], axis=1)
    simplified = simplified[keep]
    if len(simplified) > 1 and np.array_equal(simplified[0], simplified[-1]):
        simplified = simplified[:-1]
    return simplified


def mask_to_polygons(mask: np.ndarray, tolerance: float = TOLERANCE_PX) -> list[Polygon]:
    """Outer rings of ``mask`` (bool H x W) as percent polygons, largest part first; [] when empty."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    height, width = mask.shape
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    # A part's pixel count (not cv2.contourArea, which is 0 for one-pixel-wide parts).
    parts = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        filled = np.zeros((h, w), np.uint8)
        cv2.drawContours(filled, [contour - [x, y]], -1, 1, thickness=cv2.FILLED)
        parts.append((int(filled.sum()), contour))
    parts.sort(key=lambda p: -p[0])
    if not parts:
        return []
    floor = max(MIN_PART_PX, MIN_PART_FRACTION * parts[0][0])
    polygons: list[Polygon] = []
    for i, (area, contour) in enumerate(parts[:MAX_PARTS]):
        if area < floor and i > 0:  # the largest part always stays: a small object is still an object
            break
        ring = _ring(contour, tolerance)
        if len(ring) < 3:
            continue
        xs = np.clip((ring[:, 0] + 0.5) / width * 100.0, 0.0, 100.0)
        ys = np.clip((ring[:, 1] + 0.5) / height * 100.0, 0.0, 100.0)
        polygons.append([[float(x), float(y)] for x, y in zip(xs, ys, strict=True)])
    return polygons


def polygons_to_mask(polygons: list[Polygon], height: int, width: int) -> np.ndarray:
    """Rasterise percent polygons back to a bool mask (the inverse used by tests and tools)."""
    canvas = np.zeros((height, width), np.uint8)
    for polygon in polygons:
        pts = np.array(polygon, dtype=np.float64) / 100.0 * [width, height] - 0.5
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)
