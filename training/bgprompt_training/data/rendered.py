"""Loader of `bgprompt render` output (npz shards + manifest.json)."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import Dataset

from bgprompt_core.method.config import ConfigError

from ..render.store import read_manifest
from .schema import to_torch, validate


class RenderedDataset(Dataset):
    """Samples of a `bgprompt render` directory, in the shared schema.

    Layout: ``ROOT/manifest.json`` and ``ROOT/shard-00000.npz ...``; each shard holds stacked arrays
    rgb, alpha, depth, mask, normals, instance, K, cam_from_world, object_id, family. The last decoded
    shard is cached, so sequential access decompresses each shard once.
    """

    def __init__(self, root: str | Path, transform: Callable[[dict], dict] | None = None):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.transform = transform
        self._index = [(k, j) for k, s in enumerate(self.manifest["shards"]) for j in range(s["count"])]
        self._cached: tuple[int, dict] | None = None

    def __len__(self) -> int:
        return len(self._index)

    def _shard(self, k: int) -> dict:
        if self._cached is None or self._cached[0] != k:
            path = self.root / self.manifest["shards"][k]["file"]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: shard listed in the manifest is missing")
            try:
                with np.load(path, allow_pickle=False) as f:
                    self._cached = (k, {key: f[key] for key in f.files})
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated or foreign shard
                raise ConfigError(f"{path}: unreadable shard ({type(exc).__name__}: {exc}); re-render it") from exc
        return self._cached[1]

    def shard_range(self, i: int) -> range:
        """Indices stored in the same shard as sample i (decoding them together decompresses it once)."""
        k = self._index[i][0]
        start = sum(s["count"] for s in self.manifest["shards"][:k])
        return range(start, start + self.manifest["shards"][k]["count"])

    def arrays(self, i: int, keys: tuple[str, ...]) -> dict:
        """Extra arrays of sample i by name (e.g. instance, sensor_depth of tabletop data)."""
        k, j = self._index[i]
        sh = self._shard(k)
        missing = [key for key in keys if key not in sh]
        if missing:
            raise KeyError(f"{self.root}: shard {k} has no {missing} (rendered as {self.manifest['kind']})")
        return {key: sh[key][j] for key in keys}

    def raw(self, i: int) -> dict:
        """The numpy sample (before transforms) with the render's normals (for previews)."""
        k, j = self._index[i]
        sh = self._shard(k)
        return {"rgb": sh["rgb"][j], "depth": sh["depth"][j], "mask": sh["mask"][j].astype(bool),
                "normals": sh["normals"][j], "K": sh["K"][j], "alpha": sh["alpha"][j],
                "id": str(sh["object_id"][j]), "family": str(sh["family"][j])}

    def __getitem__(self, i: int) -> dict:
        sample = {k: v for k, v in self.raw(i).items() if k != "normals"}  # no loader reads them (schema.py)
        sample = validate(sample, f"{self.root}/{self.manifest['shards'][self._index[i][0]]['file']}[{i}]")
        if self.transform is not None:
            sample = self.transform(sample)
        return to_torch(sample)
