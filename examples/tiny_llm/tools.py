"""Python callables for the example's tool ops, looked up by op name (`gimletc run --tools tools.py:registry`)."""

from __future__ import annotations

import numpy as np


def post(answer: np.ndarray) -> np.ndarray:
    """Stands for detokenising: keeps the ids, drops a repeated id right after itself."""
    ids = np.asarray(answer).reshape(-1)
    keep = np.concatenate([[True], ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=bool)
    return ids[keep]


registry = {"post": post}
