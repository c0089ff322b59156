"""Thinning the points of a genome-wide scatter (Manhattan, QQ) before they are drawn.

A Manhattan plot of 10⁷ variants draws mostly overlapping dots near the x axis. As Manhattan
plotters for large scans do (PheWeb keeps its strong variants and bins the weak ones by
position and -log10 p), every point with -log10 p >= `keep_above` is kept, and of the rest one
point is kept per cell of a grid the size of the picture in pixels: what is drawn then looks
the same at that resolution, and the number of points is bounded by the grid's size plus the
strong points, whatever the number of variants. Linear time: no sort.
"""

from __future__ import annotations

import numpy as np

KEEP_ABOVE_NEG_LOG10_P = 3.0  # p < 1e-3: few enough to draw every one, and the ones people read
# The grid: one cell per pixel of the report's Manhattan plot (12 x 4 inches at 150 dpi).
GRID_WIDTH = 1800
GRID_HEIGHT = 600


def thin_indices(
    x: np.ndarray,
    y: np.ndarray,
    *,
    keep_above: float = KEEP_ABOVE_NEG_LOG10_P,
    width: int = GRID_WIDTH,
    height: int = GRID_HEIGHT,
) -> np.ndarray:
    """Sorted indices of the points to draw: all with y >= keep_above, one per grid cell below.

    Cells span [min x, max x] x [min y, keep_above] of the finite points; points whose x or y is
    not finite are dropped. At most width * height + (points with y >= keep_above) indices.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    strong = np.flatnonzero(finite & (y >= keep_above))
    weak = np.flatnonzero(finite & (y < keep_above))
    if weak.size == 0:
        return strong
    x_low, x_high = float(x[finite].min()), float(x[finite].max())
    y_low = float(y[weak].min())
    column = _cell(x[weak], x_low, x_high, width)
    row = _cell(y[weak], y_low, keep_above, height)
    cell = column * height + row
    # One representative per occupied cell: any of its points draws the same pixel, so the
    # last write of a fancy assignment (whichever it is) will do.
    representative = np.empty(width * height, dtype=np.int64)
    representative[cell] = weak
    occupied = np.zeros(width * height, dtype=bool)
    occupied[cell] = True
    kept = np.concatenate([representative[occupied], strong])
    kept.sort()
    return kept


def _cell(values: np.ndarray, low: float, high: float, cells: int) -> np.ndarray:
    span = high - low
    if span <= 0:
        return np.zeros(values.shape[0], dtype=np.int64)
    scaled = ((values - low) * (cells / span)).astype(np.int64)
    return np.clip(scaled, 0, cells - 1)
