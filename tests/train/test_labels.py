"""Labels: outlines rasterized on the tile grid, uncertain ring, incomplete references, halo."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from glacierscale.core.grid import tile_bbox_lonlat
from glacierscale.core.tiles import TileSpec
from glacierscale.train.labels import (
    GLACIER_BIT,
    RING_BIT,
    UNKNOWN,
    LabelRules,
    eval_reference,
    make_labels,
    rasterize_outlines,
    train_target,
)


def test_rasterize_on_the_tile_grid() -> None:
    tile = TileSpec(32611, 100, 200, size_px=16, resolution=30.0, halo_px=4)
    minx, _, _, maxy = tile.bounds
    # a square of exactly 5 x 3 pixels, 2 px from the left and 1 px from the top
    g = box(minx + 2 * 30, maxy - 4 * 30, minx + 7 * 30, maxy - 1 * 30)
    m = rasterize_outlines([g], tile)
    assert m.shape == tile.shape
    assert m.sum() == 15
    assert m[1:4, 2:7].all()
    assert not rasterize_outlines([], tile).any()


def test_ring_known_distance_and_core() -> None:
    glacier = np.zeros((20, 20), bool)
    glacier[5:15, 5:10] = True
    valid = np.ones_like(glacier)
    valid[0, 0] = False
    lab = make_labels(glacier, valid, LabelRules(ring_px=1), resolution=30.0)
    assert lab[0, 0] == UNKNOWN
    # the ring touches the outline on both sides, and keeps the reference class
    assert lab[10, 9] == GLACIER_BIT | RING_BIT and lab[10, 10] == RING_BIT
    assert lab[10, 7] == GLACIER_BIT and lab[10, 15] == 0
    target, use = train_target(lab)
    assert not use[10, 9] and not use[10, 10] and use[10, 7] and target[10, 7] == 1
    ref, known = eval_reference(lab)
    assert known[10, 9] and ref[10, 9] and known[10, 10] and not ref[10, 10]

    # incomplete reference: pixels farther than 90 m (3 px) from any outline are unknown
    lab = make_labels(glacier, valid, LabelRules(ring_px=0, known_within_m=90.0), resolution=30.0)
    assert lab[10, 12] == 0 and lab[10, 13] == UNKNOWN and lab[10, 2] == 0 and lab[10, 1] == UNKNOWN

    # pixels of the halo are unknown (they belong to neighbouring tiles)
    core = (slice(2, 18), slice(2, 18))
    lab = make_labels(glacier, valid, LabelRules(ring_px=0), resolution=30.0, core=core)
    assert (lab[:2] == UNKNOWN).all() and (lab[:, 18:] == UNKNOWN).all()
    assert lab[10, 7] == GLACIER_BIT


def test_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="ring_px"):
        LabelRules(ring_px=-1)
    with pytest.raises(ValueError, match="known_within_m"):
        LabelRules(known_within_m=0.0)


def test_a_box_kept_out_of_the_labels() -> None:
    from glacierscale.core.tiles import TileSpec
    from glacierscale.train.labels import excluded_pixels

    tile = TileSpec.from_id("32645_0126_1797", 128, 30.0, 0)
    w, s, e, n = tile_bbox_lonlat(tile)
    mid = (w + e) / 2
    mask = excluded_pixels(tile, [(w - 1.0, s - 1.0, mid, n + 1.0)])
    # the western half of the tile (north up, columns west to east) and nothing else
    assert mask[:, :60].all() and not mask[:, 68:].any()
    assert not excluded_pixels(tile, []).any()
    rules = LabelRules(exclude=((86.70, 27.90, 86.95, 28.05),))
    assert rules.to_dict()["exclude"] == [[86.70, 27.90, 86.95, 28.05]]
    assert "exclude" not in LabelRules().to_dict()  # chip caches of older rules stay valid
    with pytest.raises(ValueError, match="W < E"):
        LabelRules(exclude=((87.0, 27.9, 86.9, 28.0),))
