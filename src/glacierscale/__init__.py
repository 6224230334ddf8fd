"""glacierscale: cloud-native distributed glacier mapping from satellite imagery.

Plan a tile grid over glaciers, then for every tile search STAC, lazily load and stack the sensors,
run a segmentation model in overlapping batched windows, write COGs, and merge vectorized outlines
into one inventory with RGI identity and area change.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("glacierscale")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
