"""Access to the ncc reference cases in reference/ncc_outputs (a copy of ../shared/reference)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "reference" / "ncc_outputs"
CASES = REF / "cases"
DATASETS = REF / "datasets"


def all_cases() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if p.is_dir())


def cases_with(sub: str, prefix: str | None = None) -> list[str]:
    """Cases having the sub-folder/file ``sub`` (e.g. "ncc_out", "float", "model.tflite")."""
    return [c for c in all_cases() if (CASES / c / sub).exists() and (prefix is None or c.startswith(prefix))]


@lru_cache(maxsize=None)
def case_json(case: str) -> dict:
    return json.loads((CASES / case / "case.json").read_text())


def inputs(case: str) -> list[Path]:
    return sorted((CASES / case / "inputs").glob("*.bin"))


def ncc_out(case: str, stem: str) -> bytes:
    return (CASES / case / "ncc_out" / f"{stem}.bin").read_bytes()


def float_ref(case: str, stem: str) -> list[np.ndarray]:
    z = np.load(CASES / case / "float" / f"{stem}.npz")
    return [z[f"arr_{i}"] for i in range(len(z.files))]
