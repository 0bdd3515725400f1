"""``load_data(spec)``: one entry point for every loader, chosen by the spec's kind.

The CLI (``fedloom sim --data``, ``fedloom agent --data``) and Python users call this one
function; each loader's module is imported only when its kind is asked for, so a site that
reads CSV files needs neither Pillow nor Hugging Face ``datasets``.
"""

from __future__ import annotations

from fedloom.data.loaded import LoadedData
from fedloom.data.spec import DataSpec


def load_data(spec: DataSpec) -> LoadedData:
    """Load the data ``spec`` describes, from local files only (nothing is downloaded)."""
    if spec.kind == "table":
        from fedloom.data.table import load_table

        return load_table(spec)
    if spec.kind == "images":
        from fedloom.data.image_folder import load_image_folder

        return load_image_folder(spec)
    if spec.kind == "hf":
        from fedloom.data.hf_datasets import load_hf_from_disk

        return load_hf_from_disk(spec)
    from fedloom.data.arrays import load_npz

    return load_npz(spec)
