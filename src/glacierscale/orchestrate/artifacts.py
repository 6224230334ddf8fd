"""What the Prefect UI shows of a run: live progress per region, a summary and a quicklook.

Artifacts are created from the flow process only (never from Dask workers), so a run reports to
the API a handful of times per batch of tiles rather than once per tile.
"""

from __future__ import annotations

import base64
import io
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from glacierscale.pipeline import TileResult
from glacierscale.run import RunSummary

if TYPE_CHECKING:
    from glacierscale.inventory.change import ChangeResult

#: Statuses in the order the tables show them.
STATUSES = ("done", "skipped", "no-data", "failed")
#: Quicklooks larger than this are downscaled before they are embedded in the UI.
QUICKLOOK_MAX_PX = 900


def _sync(value: Any) -> UUID:
    # The artifact helpers are typed for both sync and async callers; here they run sync.
    return cast(UUID, value)


def artifact_key(*parts: str) -> str:
    """An artifact key (lowercase letters, digits and dashes only) from free-form parts."""
    text = "-".join(p for p in parts if p)
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def tally(results: Sequence[TileResult]) -> dict[str, Any]:
    """Tiles per status and km² mapped, for one region or a whole run."""
    counts = Counter(r.status for r in results)
    row: dict[str, Any] = {s: counts.get(s, 0) for s in STATUSES}
    row["km2_mapped"] = round(sum(r.glacier_km2 for r in results), 3)
    return row


class RegionProgress:
    """Live progress of one region: a progress bar and a table, updated as batches finish.

    The table is republished at most every ``every_s`` seconds (and always at the end), so a
    region of thousands of batches does not flood the API with artifact versions.
    """

    def __init__(self, region: str, total_tiles: int, n_batches: int, every_s: float = 5.0):
        self.region = region
        self.total = total_tiles
        self.n_batches = n_batches
        self.every_s = every_s
        self.results: list[TileResult] = []
        self.batches_done = 0
        self._last = 0.0
        self._progress_id: UUID | None = _sync(create_progress_artifact(
            0.0, key=artifact_key("region", region, "progress-bar"),
            description=f"Tiles processed in region {region}"))

    def update(self, batch: Sequence[TileResult]) -> None:
        """Record a finished batch; republish when due."""
        self.results.extend(batch)
        self.batches_done += 1
        if self._progress_id is not None:
            update_progress_artifact(self._progress_id,
                                     100.0 * len(self.results) / max(self.total, 1))
        if time.monotonic() - self._last >= self.every_s:
            self.publish()

    def publish(self, final: bool = False) -> UUID:
        """Publish the region's table: tiles done / skipped / no-data / failed and km² mapped."""
        self._last = time.monotonic()
        row = {"region": self.region, "tiles": self.total, **tally(self.results),
               "batches": f"{self.batches_done}/{self.n_batches}",
               "state": "finished" if final else "running"}
        return _sync(create_table_artifact(
            [row], key=artifact_key("region", self.region, "progress"),
            description=f"Region {self.region}: tiles by status and km² of glacier mapped"))


def failures_table(results: Sequence[TileResult], limit: int = 50) -> list[dict[str, str]]:
    """The first ``limit`` failed tiles with their reasons (the manifest has all of them)."""
    return [{"tile_id": r.tile_id, "reason": r.reason[:300]}
            for r in results if r.status == "failed"][:limit]


def summary_markdown(summary: RunSummary, per_region: Mapping[str, Sequence[TileResult]],
                     timings: Mapping[str, float], title: str) -> str:
    """Markdown summary of a run: per-region table, timings, then the run's own report."""
    lines = [f"# {title}", "", f"Outputs: `{summary.out}`", "",
             "| region | tiles | " + " | ".join(STATUSES) + " | km² mapped |",
             "|---|---:|" + "---:|" * len(STATUSES) + "---:|"]
    for region, results in per_region.items():
        t = tally(results)
        lines.append(f"| {region} | {len(results)} | "
                     + " | ".join(str(t[s]) for s in STATUSES) + f" | {t['km2_mapped']:.2f} |")
    lines += ["", f"Inventory: {summary.glaciers} glaciers, {summary.glacier_km2:.2f} km²", "",
              "Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), "",
              "---", "",
              # the report's relative image link cannot resolve in the UI: point to the artifact
              summary.report_md.replace("![quicklook](quicklook.png)",
                                        "See the `glacierscale-quicklook` artifact.")]
    return "\n".join(lines)


def quicklook_data_uri(png: bytes, max_px: int = QUICKLOOK_MAX_PX) -> str:
    """The quicklook as a ``data:`` URI, downscaled so the UI gets a small image.

    A data URI works whatever the output store is (s3:// URLs are not browsable from the UI).
    """
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im.thumbnail((max_px, max_px))
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def publish_run(summary: RunSummary, per_region: Mapping[str, Sequence[TileResult]],
                timings: Mapping[str, float], title: str) -> dict[str, UUID]:
    """Create the run's artifacts: summary markdown, totals table, failures, quicklook."""
    all_results = [r for rs in per_region.values() for r in rs]
    ids: dict[str, Any] = {
        "summary": create_markdown_artifact(
            summary_markdown(summary, per_region, timings, title),
            key="glacierscale-run-summary", description=title),
        "totals": create_table_artifact(
            [{"region": region, "tiles": len(rs), **tally(rs)} for region, rs in
             per_region.items()] + [{"region": "all", "tiles": len(all_results),
                                     **tally(all_results)}],
            key="glacierscale-run-totals", description="Tiles by status per region"),
    }
    failed = failures_table(all_results)
    if failed:
        ids["failures"] = create_table_artifact(
            failed, key="glacierscale-failed-tiles", description="Failed tiles and reasons")
    if summary.quicklook_png:
        ids["quicklook"] = create_image_artifact(
            quicklook_data_uri(summary.quicklook_png), key="glacierscale-quicklook",
            description=f"Quicklook of the inventory ({summary.glaciers} glaciers)")
    return {k: _sync(v) for k, v in ids.items()}


def publish_change(result: ChangeResult, title: str) -> dict[str, UUID]:
    """Artifacts of an area-change comparison: its section, the regional table, a plot per region.

    The section's image links point at files beside ``change.md``; in the UI the plots are the
    image artifacts instead.
    """
    text = re.sub(r"!\[([^\]]*)\]\(plots/[^)]*\)", r"\1 (see the image artifacts)",
                  result.markdown())
    ids: dict[str, Any] = {
        "change": create_markdown_artifact(text, key="glacierscale-change", description=title),
        "regions": create_table_artifact(result.table_rows(), key="glacierscale-change-regions",
                                         description="Area change per RGI region"),
    }
    for region, png in result.plots.items():
        ids[f"plot-{region}"] = create_image_artifact(
            quicklook_data_uri(png), key=artifact_key("glacierscale-change", str(region)),
            description=f"Area change against glacier size, region {region}")
    return {k: _sync(v) for k, v in ids.items()}
