"""Read a gpt-oss checkpoint in either released layout through one canonical (HF) naming.

    ckpt = open_checkpoint("gpt-oss-20b/")      # HF dir, or its original/ subdir, or a dir with both
    ckpt.validate()                             # every key, shape, dtype; no extras
    w = ckpt.get("model.layers.0.self_attn.q_proj.weight")   # float32 [Hq*D, H]
    b = ckpt.get("model.layers.0.mlp.experts.down_proj_blocks")  # uint8, raw MXFP4 bytes

Layouts (detected, or forced with layout=):
  hf:       config.json + model.safetensors, or shards + model.safetensors.index.json
  original: original/config.json + original/*.safetensors, or a directory that is itself that
            (config.json with OpenAI's keys + *.safetensors). When a directory holds both, as
            the released repos do, hf wins.
Canonical names and the original -> canonical mapping: see checkpoint_schema.py.

Memory: every safetensors file is mmap'd; opening reads only the headers. `raw()` returns
zero-copy views. `get()` materialises one tensor (or the requested row range): float tensors
as a float32 copy (2x their bf16 size), MXFP4 blocks/scales as views. Peak memory is therefore
one tensor at a time — for gpt-oss-20b the largest is the embedding or lm_head: 201088 x 2880
float32 = 2.3 GB; pass rows=(start, stop) to read it in chunks and stay far below that.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .checkpoint_schema import (Expected, Source, canonical_tensors, original_source,
                                original_tensors)
from .config import ModelConfig, load_config
from .safetensors_io import FLOAT_DTYPES, SafetensorsError, SafetensorsFile, to_float32

HF, ORIGINAL = "hf", "original"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that does not hold a gpt-oss model; the message names the file and key."""


def open_checkpoint(path: str | Path, layout: str | None = None) -> "Checkpoint":
    """Open a checkpoint directory (see the module docstring). Raises CheckpointError for a
    broken layout, index or file, ConfigError for a bad config.json."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory")
    layout, weights_dir = _detect_layout(root, layout)
    config = load_config(weights_dir / "config.json")
    files = _hf_files(weights_dir) if layout == HF else _original_files(weights_dir)
    return Checkpoint(root, weights_dir, layout, config, files)


def _is_original_config(config_path: Path) -> bool:
    try:
        d = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False  # load_config reports it properly
    return isinstance(d, dict) and "num_experts" in d and "num_local_experts" not in d


def _detect_layout(root: Path, forced: str | None) -> tuple[str, Path]:
    # HF needs its config and weights: a download of only original/ may still carry config.json.
    hf_ok = ((root / "config.json").is_file() and not _is_original_config(root / "config.json")
             and (forced == HF or any(root.glob("*.safetensors")) or (root / INDEX_NAME).is_file()))
    if forced not in (None, HF, ORIGINAL):
        raise CheckpointError(f"unknown layout {forced!r}; use {HF!r} or {ORIGINAL!r}")
    if forced in (None, HF) and hf_ok:
        return HF, root
    if forced in (None, ORIGINAL):
        if (root / "original" / "config.json").is_file():
            return ORIGINAL, root / "original"
        if (root / "config.json").is_file() and _is_original_config(root / "config.json"):
            return ORIGINAL, root
    wanted = {None: "config.json or original/config.json", HF: "an HF config.json",
              ORIGINAL: "original/config.json"}[forced]
    raise CheckpointError(f"{root}: no checkpoint found (expected {wanted})")


def _open_file(path: Path) -> SafetensorsFile:
    try:
        return SafetensorsFile(path)
    except SafetensorsError as e:
        raise CheckpointError(str(e)) from None


def _hf_files(root: Path) -> dict[str, SafetensorsFile]:
    """Stored key -> file, for an HF directory (single file or index + shards)."""
    index = root / INDEX_NAME
    if index.is_file():
        return _files_from_index(index)
    if (root / SINGLE_NAME).is_file():
        f = _open_file(root / SINGLE_NAME)
        return {k: f for k in f.keys()}
    shards = sorted(root.glob("*.safetensors"))
    if shards:
        raise CheckpointError(f"{root}: {len(shards)} safetensors shards but no {INDEX_NAME}")
    raise CheckpointError(f"{root}: no {SINGLE_NAME} and no {INDEX_NAME}")


def _files_from_index(index: Path) -> dict[str, SafetensorsFile]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index}: not a safetensors index ({type(e).__name__}: {e}); "
                              f"expected {{\"weight_map\": {{key: file}}}}") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: weight_map must map tensor names to file names")
    opened: dict[str, SafetensorsFile] = {}
    for name in sorted(set(weight_map.values())):
        shard = index.parent / name
        if "/" in name or not shard.is_file():
            key = next(k for k, v in weight_map.items() if v == name)
            raise CheckpointError(f"{index}: key {key!r} maps to {name!r}, which does not exist")
        opened[name] = _open_file(shard)
    for key, name in weight_map.items():
        if key not in opened[name]:
            raise CheckpointError(f"{index}: key {key!r} maps to {name!r}, which does not hold it")
    for name, f in opened.items():
        for key in f.keys():
            if weight_map.get(key) != name:
                raise CheckpointError(f"{f.path}: key {key!r} is not listed for this file in "
                                      f"{index.name}")
    return {key: opened[name] for key, name in weight_map.items()}


def _original_files(root: Path) -> dict[str, SafetensorsFile]:
    paths = sorted(root.glob("*.safetensors"))
    if not paths:
        raise CheckpointError(f"{root}: no *.safetensors files")
    files: dict[str, SafetensorsFile] = {}
    for p in paths:
        f = _open_file(p)
        for key in f.keys():
            if key in files:
                raise CheckpointError(f"{p}: key {key!r} also in {files[key].path}")
            files[key] = f
    return files


class Checkpoint:
    """An opened checkpoint; see the module docstring."""

    def __init__(self, root: Path, weights_dir: Path, layout: str, config: ModelConfig,
                 files: dict[str, SafetensorsFile]):
        self.root, self.weights_dir, self.layout, self.config = root, weights_dir, layout, config
        self._files = files
        self._canonical = canonical_tensors(config)
        self._stored = self._canonical if layout == HF else original_tensors(config)

    # ---- names -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Canonical (HF) names of every tensor, in checkpoint order."""
        return list(self._canonical)

    def expected(self, name: str) -> Expected:
        """Canonical shape and released dtype of a canonical tensor."""
        try:
            return self._canonical[name]
        except KeyError:
            raise CheckpointError(f"{name!r} is not a tensor of this {self.config.num_hidden_layers}"
                                  f"-layer gpt-oss model") from None

    def drop_pages(self) -> None:
        """Release mapped checkpoint pages from RSS (see SafetensorsFile.drop_pages)."""
        for f in {id(f): f for f in self._files.values()}.values():
            f.drop_pages()

    def stored_keys(self) -> list[str]:
        return list(self._files)

    def source(self, name: str) -> Source:
        """Where canonical `name` is stored in this checkpoint's layout."""
        self.expected(name)
        return Source(name) if self.layout == HF else original_source(self.config, name)

    # ---- data --------------------------------------------------------------------------------
    def raw(self, name: str) -> tuple[np.ndarray, str]:
        """Zero-copy view of canonical tensor `name` in its stored dtype (BF16 as uint16 bits),
        and that dtype name."""
        src = self.source(name)
        f = self._file_of(src.key)
        self._check(src.key)
        array = f.array(src.key)
        if src.rows is not None:
            array = array[src.rows[0]:src.rows[1]]
        return array, f.info(src.key).dtype

    def get(self, name: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        """Canonical tensor `name`: float32 for float tensors (exact upcast from bf16), raw uint8
        for MXFP4 blocks/scales. `rows=(start, stop)` reads only those rows of the first axis."""
        array, dtype = self.raw(name)
        if rows is not None:
            array = array[rows[0]:rows[1]]
        return array if dtype == "U8" else to_float32(array, dtype)

    # ---- checks ------------------------------------------------------------------------------
    def validate(self) -> None:
        """Every expected key present with the right shape and dtype, nothing unexpected.
        Reads headers only. Raises CheckpointError naming the file and the key."""
        problems = []
        for key in self._stored:
            if key not in self._files:
                problems.append(self._missing_message(key))
        for key, f in self._files.items():
            if key not in self._stored:
                problems.append(f"{f.path}: unexpected key {key!r} (not a tensor of a "
                                f"{self.config.num_hidden_layers}-layer gpt-oss model)")
        for key in self._stored:
            if key in self._files:
                problem = self._problem(key)
                if problem:
                    problems.append(problem)
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise CheckpointError(problems[0] + more)

    def _file_of(self, key: str) -> SafetensorsFile:
        try:
            return self._files[key]
        except KeyError:
            raise CheckpointError(self._missing_message(key)) from None

    def _missing_message(self, key: str) -> str:
        where = sorted({str(f.path) for f in self._files.values()}) or [str(self.weights_dir)]
        return f"{', '.join(where)}: missing key {key!r}"

    def _check(self, key: str) -> None:
        problem = self._problem(key)
        if problem:
            raise CheckpointError(problem)

    def _problem(self, key: str) -> str | None:
        f, want = self._files[key], self._stored[key]
        info = f.info(key)
        if info.shape != want.shape:
            return f"{f.path}: key {key!r} has shape {list(info.shape)}, expected {list(want.shape)}"
        ok = info.dtype in FLOAT_DTYPES[:3] if want.is_float else info.dtype == want.dtype
        if not ok:
            allowed = "BF16 (or F16/F32)" if want.is_float else want.dtype
            return f"{f.path}: key {key!r} has dtype {info.dtype}, expected {allowed}"
        return None
