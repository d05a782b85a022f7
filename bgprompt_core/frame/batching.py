"""The network's batch for one frame: each object's input image and mask, and the objects it cannot see."""
from __future__ import annotations

import numpy as np

from bgprompt_core.errors import InputError
from bgprompt_core.frame.masks import MaskObject
from bgprompt_core.frame.views import View

WHY_NO_DEPTH = {"off_view": "outside the network's view (recenter_fill above 1 zooms past the object)",
                "unseen": "not seen by the network: no network pixel is this object's (thinner than the network's "
                          "resolution; recenter zooms onto the object)",
                "invalid": "without a valid network depth (NaN, inf or <= 0 from the network)"}


def network_batch(image: np.ndarray, objects: list[MaskObject], views: list[View],
                  size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per object, the network's input image (N, 3, S, S) in [0, 1] and soft mask (N, 1, S, S) through its view;
    objects that share a view (a letterbox) share its image, computed once."""
    x = np.empty((len(objects), 3, size[0], size[1]), np.float32)
    m = np.empty((len(objects), 1, size[0], size[1]), np.float32)
    shared = None
    for k, (obj, view) in enumerate(zip(objects, views)):
        if k == 0 or view is not views[k - 1]:
            shared = view.network_image(image)
        x[k] = shared
        m[k, 0] = view.network_mask(obj)
    return x, m


def missing_warning(obj: MaskObject, missing: dict[str, int]) -> str:
    """The warning for an object's pixels left without depth, {reason: pixels} (``WHY_NO_DEPTH``)."""
    parts = [f"{n} ({100 * n / max(obj.pixels, 1):.0f}%) {WHY_NO_DEPTH[reason]}" for reason, n in missing.items()]
    return f"object {obj.id}: no depth for " + "; ".join(parts)


def drop_vanished(objects: list[MaskObject], x: np.ndarray, m: np.ndarray, views: list, threshold: float,
                  recenter: bool, warnings: list[str]) -> tuple[list[MaskObject], np.ndarray, np.ndarray, list]:
    """Leave out, with a warning, objects whose mask vanishes at network resolution (a 1x16 px object in a
    letterbox): Eq. 2 over the object has no pixels to take its range from (torch raised, an exported graph
    gave NaN), and no pixel of theirs would map back. Every backend gets the same batch."""
    keep = [k for k in range(len(objects)) if (m[k, 0] > 0.5).any() and (m[k, 0] >= threshold).any()]
    if len(keep) == len(objects):
        return objects, x, m, views
    gone = [objects[k].id for k in range(len(objects)) if k not in keep]
    hint = "" if recenter else "; recenter: true enlarges each object to the network input"
    s = x.shape[-2:]
    if not keep:
        raise InputError(f"every object vanishes at the network's {s[0]}x{s[1]} input (ids "
                         f"{gone}): no mask pixel is left{hint}")
    warnings.append(f"object(s) {gone} left out: their masks vanish at the network's {s[0]}x"
                    f"{s[1]} input{hint}")
    warnings += [missing_warning(objects[k], {"unseen": objects[k].pixels})
                 for k in range(len(objects)) if k not in keep]
    return [objects[k] for k in keep], x[keep], m[keep], [views[k] for k in keep]
