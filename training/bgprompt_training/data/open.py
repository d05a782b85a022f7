"""Open a data set by path: a `bgprompt render` directory, or FORMAT:PATH for the paper's data sets."""
from __future__ import annotations

from pathlib import Path

from .external import LOADERS
from .rendered import RenderedDataset


def open_dataset(spec: str, transform=None, skip_bad: bool = False):
    """``DIR`` with a manifest.json, or ``abo:DIR``, ``hm3d-abo:DIR``, ``hndr:DIR``, ``npz:DIR``, ``gso:DIR``."""
    fmt, _, path = spec.partition(":") if ":" in spec and spec.split(":", 1)[0] in LOADERS else ("", "", spec)
    if not fmt:
        if not (Path(path) / "manifest.json").is_file():
            raise FileNotFoundError(f"{path}: no manifest.json; for other data sets write FORMAT:PATH with FORMAT in "
                                    f"{sorted(LOADERS)}")
        return RenderedDataset(path, transform)
    cls = LOADERS[fmt]
    return cls(path, transform=transform) if fmt == "gso" else cls(path, transform=transform, skip_bad=skip_bad)
