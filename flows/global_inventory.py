"""Deployable entrypoint: the global glacier inventory (``prefect.yaml`` names this file).

Thin on purpose: the flow lives in the installed package (``glacierscale.orchestrate``), so a
worker image that has glacierscale installed runs exactly what this file names.
"""

from __future__ import annotations

from glacierscale.orchestrate import global_inventory

__all__ = ["global_inventory"]

if __name__ == "__main__":
    # ``python flows/global_inventory.py`` serves the flow from this process, for quick trials.
    global_inventory.serve(name="global-inventory-local")
