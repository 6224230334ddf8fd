"""RGI identity and area change: split predicted ice by the reference's ice divides.

Every piece of predicted ice gets the id of the reference glacier it lies in. Ice outside every
reference outline goes to the reference glacier it touches (an advance); where it touches several,
it is split between them by nearest outline (the divides extended outwards); ice touching none is a
new candidate with its own id. Reference outlines that overlap slightly are first made disjoint,
and the RGI "intersects" lines (shared divides), when given, cut the predicted ice too, so no
output polygon ever crosses a divide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from glacierscale.inventory.merge import equal_area_crs

#: Output columns of ``attach_rgi`` (EPSG:4326).
RGI_COLUMNS = ["rgi_id", "glacier_id", "is_new", "name", "region", "area_km2", "area_km2_lo",
               "area_km2_hi", "ref_area_km2", "area_change_km2", "area_change_pct_per_yr",
               "date_pred", "date_ref", "mean_prob", "mean_uncertainty", "n_tiles", "geometry"]
_ID_COLUMNS = ("rgi_id", "RGIId", "RGIID", "rgiid")
NEW_PREFIX = "NEW-"
_TOUCH_M = 1.0  # ice within this distance of an outline touches it (float noise at shared edges)


def reference_ids(reference: gpd.GeoDataFrame) -> pd.Series:
    """The RGI id column of a reference inventory (RGI 6 ``RGIId`` or RGI 7 ``rgi_id``)."""
    for c in _ID_COLUMNS:
        if c in reference.columns:
            return reference[c].astype(str)
    raise ValueError(f"the reference outlines have no RGI id column (one of {_ID_COLUMNS}); "
                     f"columns are {list(reference.columns)[:12]}")


def has_rgi_ids(reference: gpd.GeoDataFrame) -> bool:
    """True if ``reference`` carries an RGI id column (plain outlines, e.g. a hand-drawn
    glacier, can still be used to evaluate, but not to attach identity)."""
    return any(c in reference.columns for c in _ID_COLUMNS)


def parse_rgi_date(value: object) -> date | None:
    """Date of an RGI record: RGI 6 ``BgnDate`` 'YYYYMMDD' (99 = unknown) or RGI 7 ISO dates."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, date):
        return value
    s = str(value).strip()
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", s)
    if m:
        y, mo, d = (int(g) for g in m.groups())
        if y < 1800:
            return None
        if not 1 <= mo <= 12:  # unknown month (99): mid-year
            mo, d = 7, 1
        try:
            return date(y, mo, d)
        except ValueError:  # unknown day (99): first of the month
            return date(y, mo, 1)
    m = re.match(r"(\d{4})-(\d{2})-(\d{2})", s)
    if m:
        return date(*(int(g) for g in m.groups()))
    return None


def _ref_dates(reference: gpd.GeoDataFrame) -> list[date | None]:
    for c in ("src_date", "BgnDate", "bgndate"):
        if c in reference.columns:
            return [parse_rgi_date(v) for v in reference[c]]
    return [None] * len(reference)


def rgi_region(rgi_id: str, row: pd.Series) -> str:
    """The RGI first-order region of a glacier: its outline's O1 column, else read from its id."""
    for c in ("o1region", "O1Region"):
        if c in row and row[c] is not None and str(row[c]) not in ("", "nan"):
            return str(row[c]).zfill(2)
    m = re.search(r"-(\d{2})[.-]", rgi_id)
    return m.group(1) if m else "unknown"


def _disjoint(geoms: np.ndarray) -> np.ndarray:
    """Reference outlines made disjoint: each gives up what earlier ones already cover."""
    out = geoms.copy()
    tree = shapely.STRtree(geoms)
    for i in range(len(geoms)):
        # In index order: the result then does not depend on which outlines share the tree.
        earlier = sorted(j for j in tree.query(geoms[i], predicate="intersects") if j < i)
        if earlier:
            out[i] = shapely.difference(geoms[i], shapely.union_all(out[earlier]))
    return out


def _split_nearest(piece: BaseGeometry, refs: np.ndarray, ids: list[int],
                   step: float) -> list[tuple[int, BaseGeometry]]:
    """Split ``piece`` between reference outlines by nearest outline (Voronoi of their edges)."""
    minx, miny, maxx, maxy = piece.bounds
    reach = shapely.box(minx, miny, maxx, maxy).buffer(np.hypot(maxx - minx, maxy - miny) + step)
    pts, owner = [], []
    for k, i in enumerate(ids):
        # Only edges within reach can be the nearest edge of a point of the piece.
        edge = shapely.intersection(shapely.boundary(refs[i]), reach)
        c = shapely.get_coordinates(shapely.segmentize(edge, step))
        pts.append(c)
        owner.append(np.full(len(c), k))
    # Rounding to centimetres merges the shared vertices of adjacent outlines, which would
    # otherwise make near-duplicate Voronoi sites that GEOS cannot triangulate.
    coords, first, inverse = np.unique(np.round(np.concatenate(pts), 2), axis=0,
                                       return_index=True, return_inverse=True)
    all_owners = np.concatenate(owner)
    owners = all_owners[first]
    # A vertex shared by two outlines (on their divide) belongs to neither: keeping it would
    # shift the extended divide by up to a sampling step towards one side.
    n_owners = np.zeros(len(coords), int)
    for k in range(len(ids)):
        n_owners[np.unique(inverse.ravel()[all_owners == k])] += 1
    coords, owners = coords[n_owners == 1], owners[n_owners == 1]
    # Regularly spaced collinear sites are degenerate for the triangulation behind Voronoi;
    # a fixed millimetre jitter removes that without moving any divide noticeably.
    jitter = np.random.default_rng(0).uniform(-1e-3, 1e-3, coords.shape)
    try:
        if len(coords) < 3:
            raise shapely.errors.GEOSException("too few sites")
        cells = shapely.get_parts(shapely.voronoi_polygons(
            shapely.multipoints(coords + jitter), extend_to=reach))
    except shapely.errors.GEOSException:
        # Degenerate sites: give the piece to the outline sharing the longest border with it.
        border = [shapely.length(shapely.intersection(piece.buffer(_TOUCH_M), refs[i].boundary))
                  for i in ids]
        return [(ids[int(np.argmax(border))], piece)]
    ci, pi = shapely.STRtree(shapely.points(coords + jitter)).query(cells, predicate="contains")
    cell_owner = np.full(len(cells), -1)
    cell_owner[ci] = owners[pi]
    # Only the cells overlapping the piece matter; clip them first, union the small results.
    hit = shapely.STRtree(cells).query(piece, predicate="intersects")
    clipped = shapely.intersection(piece, cells[hit])
    out = []
    for k, i in enumerate(ids):
        mine = clipped[cell_owner[hit] == k]
        if len(mine):
            part = _polygonal(shapely.union_all(mine))
            if part is not None:
                out.append((i, part))
    return out


def attach_rgi(inventory: gpd.GeoDataFrame, reference: gpd.GeoDataFrame, *,
               date_pred: date | None, date_ref: date | None,
               intersects: gpd.GeoDataFrame | None = None,
               divide_extend_m: float = 200.0) -> gpd.GeoDataFrame:
    """One row per reference glacier found (and per new candidate), with area change.

    ``inventory`` is ``merge_tiles`` output; ``reference`` RGI outlines (any CRS; RGI 6 or 7
    columns). ``intersects`` are the reference's divide lines (RGI intersects); they cut the
    predicted ice, extended by ``divide_extend_m`` beyond their ends so that ice grown past the
    old outlines is cut too. ``date_ref`` overrides the reference's own per-glacier dates
    (RGI ``BgnDate`` / ``src_date``). Areas are in km² in a local equal-area CRS;
    ``area_change_pct_per_yr`` is 100 * change / reference area / years between the dates (NaN
    without dates). Area bounds (``area_km2_lo``/``_hi``) are shared out by area. Reference
    glaciers touched by no predicted ice are not listed: whether they vanished or lie outside the
    mapped area is for the caller to say (see ``missing_reference``).
    """
    prep = prepare(inventory, reference, intersects, divide_extend_m)
    if prep is None:
        return empty_result()
    R = _disjoint(prep.R) if len(prep.ref) else np.array([])
    P = prep.P if prep.lines is None else cut_all(prep.P, union_lines(prep.lines))
    p_area = shapely.area(P)
    rows, new_geoms = attach_rows(prep.inv, P, p_area, R, prep.ref, divide_step(p_area),
                                  date_pred=date_pred, date_ref=date_ref)
    region_of_new(rows, new_geoms, R, prep.ref)
    return result_frame(rows, prep.ea)


def empty_result() -> gpd.GeoDataFrame:
    """``attach_rgi``'s output with no rows."""
    return gpd.GeoDataFrame({c: [] for c in RGI_COLUMNS if c != "geometry"},
                            geometry=gpd.GeoSeries([], crs="EPSG:4326"), crs="EPSG:4326")


@dataclass
class Prepared:
    """``attach_rgi``'s inputs in its equal-area CRS: predicted glaciers ``inv`` with their
    geometries ``P``, the reference glaciers near them ``ref`` with geometries ``R`` (valid,
    not yet disjoint), the divide lines prolonged (or None) and the CRS."""

    inv: gpd.GeoDataFrame
    P: np.ndarray
    ref: gpd.GeoDataFrame
    R: np.ndarray
    lines: list[BaseGeometry] | None
    ea: Any


def prepare(inventory: gpd.GeoDataFrame, reference: gpd.GeoDataFrame,
            intersects: gpd.GeoDataFrame | None, divide_extend_m: float) -> Prepared | None:
    """Check and project the inputs of ``attach_rgi``; None when no glacier was predicted."""
    if inventory.crs is None or (len(reference) and reference.crs is None):
        raise ValueError("inventory and reference need a CRS; set it with .set_crs(...)")
    inv = inventory[inventory.geometry.notna() & ~inventory.geometry.is_empty]
    inv = inv.reset_index(drop=True)
    if not len(inv):
        return None
    inv_ll = inv.to_crs(4326)
    ref = reference
    if len(ref):
        ref = reference.to_crs(4326)
        ref = ref[ref.intersects(shapely.box(*inv_ll.total_bounds).buffer(0.05))]
    ref = ref.reset_index(drop=True)
    ids = reference_ids(ref).tolist() if len(ref) else []
    if len(set(ids)) != len(ids):
        raise ValueError("the reference has duplicate RGI ids; dissolve them first "
                         "(gdf.dissolve(by='RGIId'))")
    ea = equal_area_crs([tuple(inv_ll.total_bounds)])
    P = inv_ll.to_crs(ea).geometry.to_numpy()
    R = ref.to_crs(ea).geometry.make_valid().to_numpy() if len(ref) else np.array([])
    lines = None
    if intersects is not None and len(intersects):
        div = intersects.to_crs(ea).geometry
        if div.geom_type.isin(["Polygon", "MultiPolygon"]).all():
            div = div.boundary
        lines = _extend_lines(shapely.get_parts(div.to_numpy()), divide_extend_m)
    return Prepared(inv, P, ref, R, lines, ea)


def divide_step(p_area: np.ndarray) -> float:
    """Sampling step (m) of outline edges when ice is split between reference glaciers."""
    return max(float(np.sqrt(np.median(p_area))) / 50.0, 10.0)


def cut_all(P: np.ndarray, lines: BaseGeometry) -> np.ndarray:
    """Every predicted glacier split along the divide lines."""
    return np.array([_cut(p, lines) for p in P], dtype=object)


def attach_rows(inv: gpd.GeoDataFrame, P: np.ndarray, p_area: np.ndarray, R: np.ndarray,
                ref: gpd.GeoDataFrame, step: float, *, date_pred: date | None,
                date_ref: date | None) -> tuple[list[dict[str, object]], list[BaseGeometry]]:
    """Rows (equal-area geometry) of the reference glaciers found and of new glaciers, the new
    ones without their region yet (``region_of_new``), and the new glaciers' geometries.

    Each row depends only on the predicted glaciers and reference outlines it touches, so rows
    made for separate groups of them are the rows made for all at once.
    """
    pieces = _assign(P, R, step)
    ids = reference_ids(ref).tolist() if len(ref) else []
    dates = _ref_dates(ref) if len(ref) else []
    rows = []
    by_ref: dict[int, list[tuple[int, BaseGeometry]]] = {}
    new: dict[int, list[BaseGeometry]] = {}
    for k, i, g in pieces:
        if i is None:
            new.setdefault(k, []).append(g)
        else:
            by_ref.setdefault(i, []).append((k, g))
    new_geoms = []
    for k, gs in new.items():
        geom = shapely.union_all(gs)
        rows.append(_row(inv.iloc[k], geom, p_area[k], None, None, None, None, date_pred))
        new_geoms.append(geom)
    for i, parts in by_ref.items():
        geom = _union_pieces([g for _, g in parts])
        src = inv.iloc[max(parts, key=lambda kg: kg[1].area)[0]]
        weights = {k: 0.0 for k, _ in parts}
        for k, g in parts:
            weights[k] += g.area / max(p_area[k], 1e-9)
        lo = sum(inv.iloc[k]["area_km2_lo"] * w for k, w in weights.items())
        hi = sum(inv.iloc[k]["area_km2_hi"] * w for k, w in weights.items())
        rows.append(_row(src, geom, None, ids[i], ref.iloc[i], shapely.area(R[i]),
                         date_ref or dates[i], date_pred, bounds=(lo, hi)))
    return rows, new_geoms


def region_of_new(rows: list[dict[str, object]], new_geoms: list[BaseGeometry], R: np.ndarray,
                  ref: gpd.GeoDataFrame) -> None:
    """Set the region of the new glaciers (the first rows): their nearest reference glacier's."""
    if not len(R) or not new_geoms:
        return
    ids = reference_ids(ref).tolist()
    near = shapely.STRtree(R).nearest(np.asarray(new_geoms, dtype=object))
    for row, j in zip(rows, np.atleast_1d(near).tolist(), strict=False):
        row["region"] = rgi_region(ids[j], ref.iloc[j])


def result_frame(rows: list[dict[str, object]], ea: Any) -> gpd.GeoDataFrame:
    """``attach_rgi``'s output from its rows: to EPSG:4326, ordered by (is_new, rgi_id)."""
    out = gpd.GeoDataFrame(rows, geometry="geometry", crs=ea).to_crs(4326)
    out = out.sort_values(["is_new", "rgi_id"], ignore_index=True)
    return out[RGI_COLUMNS]


def union_lines(lines: list[BaseGeometry]) -> BaseGeometry:
    """One geometry of divide lines (what ``_cut`` takes)."""
    return shapely.union_all(lines) if lines else shapely.LineString()


def _extend_lines(lines: np.ndarray, d: float) -> list[BaseGeometry]:
    """Divide lines, each prolonged by ``d`` metres along its first and last segment."""
    out = []
    for ln in lines:
        if ln is None or ln.is_empty or ln.geom_type != "LineString":
            continue
        c = shapely.get_coordinates(ln)
        if d > 0 and len(c) >= 2:
            def ext(a: np.ndarray, b: np.ndarray) -> np.ndarray:
                v = a - b
                n = float(np.hypot(*v))
                return a + v / n * d if n > 0 else a
            c = np.vstack([ext(c[0], c[1]), c, ext(c[-1], c[-2])])
        out.append(shapely.linestrings(c))
    return out


def _cut(poly: BaseGeometry, lines: BaseGeometry) -> BaseGeometry:
    """Split ``poly`` along divide lines (returns a collection of the faces)."""
    if not poly.intersects(lines):
        return poly
    faces = shapely.get_parts(shapely.polygonize(
        # Whole lines, not lines clipped to the polygon: clipped ends can fall a hair short of
        # the boundary and then dangle instead of cutting.
        shapely.get_parts(shapely.union_all([poly.boundary, lines]))))
    faces = [f for f in faces if poly.contains(f.representative_point())]
    return shapely.geometrycollections(faces) if faces else poly


def _assign(P: np.ndarray, R: np.ndarray,
            step: float) -> list[tuple[int, int | None, BaseGeometry]]:
    """(predicted index, reference index or None, piece) for every piece of predicted ice."""
    out: list[tuple[int, int | None, BaseGeometry]] = []
    tree = shapely.STRtree(R) if len(R) else None
    for k, p in enumerate(P):
        faces = shapely.get_parts(p) if p.geom_type == "GeometryCollection" else [p]
        for face in faces:
            # Sorted, like every index list below: the pieces then come out the same whether
            # the tree holds all reference outlines or only those near this glacier.
            cand: np.ndarray = (np.sort(tree.query(face, predicate="intersects"))
                                if tree is not None else np.zeros(0, np.int64))
            inters = [(int(i), _polygonal(shapely.intersection(face, R[i]))) for i in cand]
            inside = [(i, g) for i, g in inters if g is not None]
            if not inside:
                out.append((k, None, face))
                continue
            if len(inside) == 1:
                # A connected face overlapping one outline is that glacier, advance included.
                out.append((k, inside[0][0], face))
                continue
            out.extend((k, i, g) for i, g in inside)
            idx = np.array([i for i, _ in inside])
            rest = _polygonal(shapely.difference(face, shapely.union_all(R[idx])))
            if rest is None:
                continue
            parts = shapely.get_parts(rest)
            # One bulk query, the big outlines as (prepared) inputs: which outline each
            # leftover part touches.
            ri, oi = shapely.STRtree(parts).query(R[idx], predicate="dwithin",
                                                  distance=_TOUCH_M)
            near: dict[int, list[int]] = {}
            for r_, o_ in zip(ri, oi, strict=True):
                near.setdefault(int(o_), []).append(int(idx[r_]))
            for j, o in enumerate(parts):
                refs = sorted(near.get(j, []))
                if not refs:
                    out.append((k, None, o))
                elif len(refs) == 1:
                    out.append((k, refs[0], o))
                else:
                    out.extend((k, i, g) for i, g in _split_nearest(o, R, refs, step))
    return out


def _union_pieces(pieces: list[BaseGeometry]) -> BaseGeometry:
    """Union of non-overlapping pieces cut from the same ice: fast coverage union, checked.

    The pieces usually form an exact coverage (shared edges, no overlaps), where GEOS's coverage
    union is linear-time; when float noise breaks that, the result fails the area/validity
    check and the general (noding) union is used instead.
    """
    if len(pieces) == 1:
        return pieces[0]
    arr = np.empty(len(pieces), dtype=object)
    arr[:] = pieces
    total = float(shapely.area(arr).sum())
    try:
        fast = shapely.coverage_union_all(arr)
        if fast.is_valid and abs(fast.area - total) <= 1e-9 * max(total, 1.0):
            return fast
    except shapely.errors.GEOSException:
        pass
    return shapely.union_all(arr)


def _polygonal(g: BaseGeometry) -> BaseGeometry | None:
    """Only the polygonal part of an overlay result (drops lines/points of touching edges)."""
    if g.is_empty:
        return None
    if g.geom_type in ("Polygon", "MultiPolygon"):
        return g if g.area > 0 else None
    polys = [p for p in shapely.get_parts(g) if p.geom_type in ("Polygon", "MultiPolygon")]
    u = shapely.union_all(polys) if polys else None
    return u if u is not None and u.area > 0 else None


def _row(src: pd.Series, geom: BaseGeometry, parent_area: float | None, rgi_id: str | None,
         ref_row: pd.Series | None, ref_area_m2: float | None, d_ref: date | None,
         d_pred: date | None, bounds: tuple[float, float] | None = None) -> dict[str, object]:
    area = geom.area / 1e6
    if bounds is None:
        frac = geom.area / parent_area if parent_area else 1.0
        bounds = (float(src["area_km2_lo"]) * frac, float(src["area_km2_hi"]) * frac)
    is_new = rgi_id is None
    gid = str(src["glacier_id"])
    ref_km2 = 0.0 if ref_area_m2 is None else ref_area_m2 / 1e6
    change = area - ref_km2
    years = (d_pred - d_ref).days / 365.25 if d_pred and d_ref else float("nan")
    pct = 100.0 * change / ref_km2 / years if ref_km2 > 0 and years and years > 0 else np.nan
    name = ref_row.get("Name", ref_row.get("glac_name")) if ref_row is not None else None
    region = rgi_region(rgi_id, ref_row) if rgi_id and ref_row is not None else ""
    return {"rgi_id": rgi_id or f"{NEW_PREFIX}{gid}", "glacier_id": gid, "is_new": is_new,
            "name": None if name is None or str(name) in ("", "nan", "None") else str(name),
            "region": region, "area_km2": area, "area_km2_lo": bounds[0],
            "area_km2_hi": bounds[1], "ref_area_km2": ref_km2, "area_change_km2": change,
            "area_change_pct_per_yr": pct, "date_pred": d_pred, "date_ref": d_ref,
            "mean_prob": float(src["mean_prob"]),
            "mean_uncertainty": float(src["mean_uncertainty"]),
            "n_tiles": int(src["n_tiles"]), "geometry": geom}


def missing_reference(result: gpd.GeoDataFrame, reference: gpd.GeoDataFrame,
                      mapped_area: BaseGeometry, *, date_pred: date | None,
                      date_ref: date | None = None) -> gpd.GeoDataFrame:
    """``result`` plus a zero-area row for each reference glacier inside ``mapped_area``
    (lon/lat) that no predicted ice touched: glaciers the prediction says have vanished.

    Only glaciers lying wholly inside the mapped area are added: one cut by its edge may simply
    continue beyond what was mapped.
    """
    if not len(reference) or mapped_area is None or mapped_area.is_empty:
        return result
    ref = reference.to_crs(4326).reset_index(drop=True)
    ids = reference_ids(ref)
    found = set(result["rgi_id"].astype(str)) if len(result) else set()
    inside = ref.within(mapped_area) & ~ids.isin(found)
    if not inside.any():
        return result
    ea = equal_area_crs([tuple(ref.loc[inside].total_bounds)])
    areas = ref.loc[inside].to_crs(ea).area.to_numpy() / 1e6
    dates = _ref_dates(ref)
    rows = []
    for (i, r), ref_km2 in zip(ref.loc[inside].iterrows(), areas, strict=True):
        d_ref = date_ref or dates[int(str(i))]
        years = (date_pred - d_ref).days / 365.25 if date_pred and d_ref else float("nan")
        pct = -100.0 / years if years and years > 0 else np.nan
        name = r.get("Name", r.get("glac_name"))
        rows.append({"rgi_id": ids.iloc[int(str(i))], "glacier_id": "", "is_new": False,
                     "name": None if name is None or str(name) in ("", "nan") else str(name),
                     "region": rgi_region(ids.iloc[int(str(i))], r), "area_km2": 0.0,
                     "area_km2_lo": 0.0, "area_km2_hi": 0.0, "ref_area_km2": float(ref_km2),
                     "area_change_km2": -float(ref_km2), "area_change_pct_per_yr": pct,
                     "date_pred": date_pred, "date_ref": d_ref, "mean_prob": np.nan,
                     "mean_uncertainty": np.nan, "n_tiles": 0, "geometry": None})
    extra = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    both = pd.concat([result, extra[RGI_COLUMNS]], ignore_index=True) if len(result) else extra
    return gpd.GeoDataFrame(both, geometry="geometry", crs="EPSG:4326")[RGI_COLUMNS]
