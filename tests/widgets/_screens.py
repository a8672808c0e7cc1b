"""ModelDeck's screenshot comparison: tile by tile, with renders waiting beside the reference for approval.

A mean difference over a whole view hides a changed figure or a cell that changed colour: a few
hundred pixels out of a million. Here the images are cut into ``TILE``×``TILE`` px tiles and a
screenshot fails as soon as **one** tile differs by more than ``TILE_TOLERANCE``. Renders in these
tests are deterministic (bundled fonts, Fusion, fixed sizes, device pixel ratio 1), so an unchanged
view differs by exactly 0; the tolerance only lets through rounding noise of one level in a tenth of
a tile's channel values, far less than one glyph or one cell changing colour.

A screenshot that differs, or has no reference yet, never overwrites the reference: the render is
written beside it as ``<name>.pending.png`` with ``<name>.diff.png`` (the differing regions outlined),
and the test fails naming them and the tiles. ``scripts/approve-screenshots`` (or pytest's
``--approve-screenshots`` / ``--force-regen``) is the explicit step that makes a render the reference.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

#: Tile edge, in pixels (the last row and column of tiles may be smaller).
TILE = 32
#: The largest mean absolute difference (0–255, over a tile's pixels and RGBA channels) a tile may
#: show. 0.1 is a tenth of the channel values off by one level; one pixel turned from black to white
#: in a full tile is 0.19, a changed digit 2 or more, a table cell turning from red to green about 20.
TILE_TOLERANCE = 0.1
#: Suffixes of the files written beside a reference (ignored by git, see .gitignore).
PENDING_SUFFIX = ".pending.png"
DIFF_SUFFIX = ".diff.png"
#: How many differing regions a failure message lists before summarising the rest.
REGIONS_SHOWN = 12


@dataclass(frozen=True)
class Tile:
    """One differing tile: its pixel box (``x0 <= x < x1``, ``y0 <= y < y1``) and how much it differs."""

    x0: int
    y0: int
    x1: int
    y1: int
    mean: float
    worst: int

    def __str__(self) -> str:
        return f"x {self.x0}–{self.x1}, y {self.y0}–{self.y1} (mean {self.mean:.2f}, max {self.worst})"


@dataclass(frozen=True)
class Region:
    """Touching differing tiles merged into one box, as a failure message names them."""

    x0: int
    y0: int
    x1: int
    y1: int
    tiles: int
    worst_mean: float

    def __str__(self) -> str:
        n = f"{self.tiles} tile{'s' if self.tiles > 1 else ''}"
        return f"x {self.x0}–{self.x1}, y {self.y0}–{self.y1}: {n}, worst mean difference {self.worst_mean:.2f}"


@dataclass
class Comparison:
    """The result of comparing a render with its reference."""

    size: tuple[int, int]
    reference_size: tuple[int, int]
    tiles: list[Tile] = field(default_factory=list)
    #: Per-pixel largest channel difference (height × width), for the diff image; None if sizes differ.
    pixel_diff: np.ndarray | None = None

    @property
    def same_size(self) -> bool:
        return self.size == self.reference_size

    @property
    def ok(self) -> bool:
        return self.same_size and not self.tiles

    def regions(self) -> list[Region]:
        """Differing tiles grouped into boxes of tiles that touch (8-neighbourhood), largest first."""
        by_cell = {(t.x0 // TILE, t.y0 // TILE): t for t in self.tiles}
        seen: set[tuple[int, int]] = set()
        out: list[Region] = []
        for start in by_cell:
            if start in seen:
                continue
            group, todo = [], [start]
            seen.add(start)
            while todo:
                cx, cy = todo.pop()
                group.append(by_cell[(cx, cy)])
                for dx in (-1, 0, 1):
                    for dy in (-1, 0, 1):
                        n = (cx + dx, cy + dy)
                        if n in by_cell and n not in seen:
                            seen.add(n)
                            todo.append(n)
            out.append(Region(min(t.x0 for t in group), min(t.y0 for t in group), max(t.x1 for t in group),
                              max(t.y1 for t in group), len(group), max(t.mean for t in group)))
        return sorted(out, key=lambda r: (-r.tiles, r.y0, r.x0))

    def describe(self) -> str:
        if not self.same_size:
            (w, h), (rw, rh) = self.size, self.reference_size
            return f"size {w}×{h} px, the reference is {rw}×{rh}"
        if not self.tiles:
            return "identical within the tolerance"
        regions = self.regions()
        lines = [f"{len(self.tiles)} of {_tile_count(self.size)} tiles ({TILE}×{TILE} px) differ by more than "
                 f"{TILE_TOLERANCE} in {len(regions)} region{'s' if len(regions) > 1 else ''}:"]
        lines += [f"  {r}" for r in regions[:REGIONS_SHOWN]]
        if len(regions) > REGIONS_SHOWN:
            lines.append(f"  … and {len(regions) - REGIONS_SHOWN} more")
        return "\n".join(lines)


def _tile_count(size: tuple[int, int]) -> int:
    return -(-size[0] // TILE) * -(-size[1] // TILE)


def load(image: bytes | Path | Image.Image) -> Image.Image:
    """An RGBA image from PNG bytes, a file or an image."""
    if isinstance(image, Image.Image):
        return image.convert("RGBA")
    if isinstance(image, Path):
        image = image.read_bytes()
    with Image.open(io.BytesIO(image)) as im:
        return im.convert("RGBA")


def compare(reference: bytes | Path | Image.Image, render: bytes | Path | Image.Image,
            tolerance: float = TILE_TOLERANCE) -> Comparison:
    """Compare ``render`` with ``reference`` tile by tile; every tile over ``tolerance`` is listed."""
    ref, new = load(reference), load(render)
    result = Comparison(size=new.size, reference_size=ref.size)
    if not result.same_size:
        return result
    diff = np.abs(np.asarray(new, dtype=np.int16) - np.asarray(ref, dtype=np.int16))  # h × w × 4
    result.pixel_diff = diff.max(axis=2).astype(np.uint8)
    width, height = new.size
    for y0 in range(0, height, TILE):
        for x0 in range(0, width, TILE):
            tile = diff[y0:y0 + TILE, x0:x0 + TILE]
            mean = float(tile.mean())
            if mean > tolerance:
                result.tiles.append(Tile(x0, y0, min(x0 + TILE, width), min(y0 + TILE, height), mean,
                                         int(tile.max())))
    return result


def diff_image(render: bytes | Path | Image.Image, comparison: Comparison) -> Image.Image:
    """The render washed out, its differing pixels in magenta, each region of differing tiles outlined in red."""
    new = load(render).convert("RGB")
    washed = Image.blend(new, Image.new("RGB", new.size, "white"), 0.6)
    if comparison.pixel_diff is not None:
        pixels = np.asarray(washed).copy()
        pixels[comparison.pixel_diff > 0] = (255, 0, 255)
        washed = Image.fromarray(pixels)
    draw = ImageDraw.Draw(washed)
    if not comparison.same_size:
        draw.rectangle((0, 0, new.size[0] - 1, new.size[1] - 1), outline=(220, 0, 0), width=3)
    for r in comparison.regions():
        draw.rectangle((r.x0, r.y0, r.x1 - 1, r.y1 - 1), outline=(220, 0, 0), width=2)
    return washed


def pending_path(reference: Path) -> Path:
    return reference.with_name(reference.stem + PENDING_SUFFIX)


def diff_path(reference: Path) -> Path:
    return reference.with_name(reference.stem + DIFF_SUFFIX)


def reference_of(pending: Path) -> Path:
    """The reference a ``.pending.png`` is waiting to replace."""
    assert pending.name.endswith(PENDING_SUFFIX), pending
    return pending.with_name(pending.name[: -len(PENDING_SUFFIX)] + ".png")


def find_pending(root: Path, names: Iterable[str] = ()) -> list[Path]:
    """Every ``.pending.png`` under ``root`` whose reference path contains one of ``names`` (all if none)."""
    names = list(names)
    found = sorted(root.rglob("*" + PENDING_SUFFIX))
    if not names:
        return found
    return [p for p in found if any(n in str(reference_of(p)) or n in str(reference_of(p).resolve()) for n in names)]


def approve(pending: Path) -> Path:
    """Move ``pending`` over its reference and delete its diff image; returns the reference."""
    reference = reference_of(pending)
    pending.replace(reference)
    diff_path(reference).unlink(missing_ok=True)
    return reference


def reference_for(test_file: Path, test_name: str, basename: str | None = None) -> Path:
    """Where pytest-regressions kept a test's reference: ``<test module folder>/<test name>.png``."""
    return Path(test_file).with_suffix("") / ((basename or re.sub(r"[\W]", "_", test_name)) + ".png")


class ScreenshotChecker:
    """The ``image_regression`` fixture of tests/widgets: ``check(png_bytes, diff_threshold=...)``.

    ``diff_threshold`` is accepted so the call shape of pytest-regressions stays; the tile tolerance
    (``TILE_TOLERANCE``) is what decides.
    """

    def __init__(self, test_file: Path, test_name: str, approve: bool = False, root: Path | None = None):
        self.test_file = Path(test_file)
        self.test_name = test_name
        self.approve = approve
        self.root = root or self.test_file.parents[2]

    def _show(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def check(self, image_data: bytes, diff_threshold: float | None = None, *, basename: str | None = None,
              fullpath: str | Path | None = None) -> Comparison | None:
        del diff_threshold  # the tiles decide; see TILE_TOLERANCE
        reference = Path(fullpath) if fullpath else reference_for(self.test_file, self.test_name, basename)
        pending, diff = pending_path(reference), diff_path(reference)
        ref_shown = self._show(reference)
        if not reference.exists():
            reference.parent.mkdir(parents=True, exist_ok=True)
            if self.approve:
                reference.write_bytes(image_data)
                pending.unlink(missing_ok=True)
                pytest.fail(f"screenshot {ref_shown} had no reference: written (--approve-screenshots); "
                            "look at it, then run again", pytrace=False)
            pending.write_bytes(image_data)
            diff.unlink(missing_ok=True)
            pytest.fail(f"screenshot {ref_shown} has no reference yet. The render waits in {self._show(pending)}:\n"
                        f"look at it, then approve it with  scripts/approve-screenshots {reference.stem}",
                        pytrace=False)
        comparison = compare(reference, image_data)
        if comparison.ok:
            # an earlier render waiting for approval is moot now
            pending.unlink(missing_ok=True)
            diff.unlink(missing_ok=True)
            return comparison
        if self.approve:
            reference.write_bytes(image_data)
            pending.unlink(missing_ok=True)
            diff.unlink(missing_ok=True)
            pytest.fail(f"screenshot {ref_shown} replaced (--approve-screenshots): {comparison.describe()}\n"
                        "look at it (git diff), then run again", pytrace=False)
        pending.write_bytes(image_data)
        diff_image(image_data, comparison).save(diff)
        pytest.fail(f"screenshot {ref_shown} differs from its reference: {comparison.describe()}\n"
                    f"new render: {self._show(pending)}\n"
                    f"diff (differing regions outlined in red, pixels in magenta): {self._show(diff)}\n"
                    f"if the change is intended: look at both, then  scripts/approve-screenshots {reference.stem}",
                    pytrace=False)


def main(argv: list[str] | None = None) -> int:
    """``scripts/approve-screenshots``: list, approve or reject renders waiting beside their references."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="scripts/approve-screenshots",
        description="Make the renders that screenshot tests left as <name>.pending.png the references "
                    "(after looking at them and their <name>.diff.png). See tests/widgets/README.md.")
    parser.add_argument("names", nargs="*",
                        help="part of a reference's path (test name, module or file); all pending ones if none")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true", help="list what is pending and what would change; move nothing")
    action.add_argument("--reject", action="store_true", help="delete the pending renders and their diff images")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="where to look for pending renders (default: tests/)")
    args = parser.parse_args(argv)
    cwd = Path.cwd()

    def shown(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(cwd))
        except ValueError:
            return str(p)

    pending = find_pending(args.root, args.names)
    if not pending:
        print("no screenshots pending" + (f" matching {' '.join(args.names)}" if args.names else ""))
        return 0 if args.list or not args.names else 1
    for p in pending:
        reference = reference_of(p)
        if reference.exists():
            what = compare(reference, p).describe()
        else:
            what = "new: no reference yet"
        print(f"{shown(reference)}\n  pending: {shown(p)}\n  {what.replace(chr(10), chr(10) + '  ')}")
        if diff_path(reference).exists():
            print(f"  diff image: {shown(diff_path(reference))}")
        if args.list:
            continue
        if args.reject:
            p.unlink()
            diff_path(reference).unlink(missing_ok=True)
            print("  rejected: pending render deleted")
        else:
            approve(p)
            print("  approved: now the reference (commit it with the change that caused it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
