"""Pure geometry and numerics: tiles, grids, window weights, metrics.

Nothing here imports an I/O library (rasterio, fsspec, torch, dask, prefect): these are values and
functions that every other layer can share and that test in microseconds.
"""
