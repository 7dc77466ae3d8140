"""The KV cache of one sequence slot: the ONE formula for its bytes, shared by compile (the
manifest's `kv_layout`), `plan`, and every backend (slot budgets under --max-memory).

Per layer, keys and values are [kv_heads, capacity, head_dim] each:
  * full-attention layers (odd layers of gpt-oss) hold every token: capacity = context;
  * window layers (even layers, `sliding_window` = 128) hold at most `sliding_window` tokens in
    a fixed buffer of `sliding_window` rows: a ring on TensorRT, ONNX Runtime's window-sized
    `sliding_window_cache` buffer on CPU (fixed by the graph's binding shapes).
So one slot of `context` tokens costs
    full_bytes_per_token x context + ring_bytes_per_slot x sliding_window.
gpt-oss-20b in fp16: 12 full layers x 2 x 8 x 64 x 2 B = 24 KiB per token, plus a fixed 3 MiB of
rings (12 layers x 128 slots x 2 KiB).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


class KvLayoutError(ValueError):
    """A manifest's kv_layout that cannot be read; the message names the field."""


@dataclasses.dataclass(frozen=True)
class KvLayout:
    dtype: str                        # element type of the cache ("float32", "float16", "bfloat16")
    num_kv_heads: int
    head_dim: int
    ring_layers: tuple[int, ...]      # window layers: at most `ring_slots` tokens each
    full_layers: tuple[int, ...]      # full-attention layers: every token
    ring_slots: int                   # = sliding_window

    @classmethod
    def of(cls, cfg, dtype: str = "float32") -> "KvLayout":
        """The layout of a ModelConfig at a cache dtype."""
        if dtype not in DTYPE_BYTES:
            raise KvLayoutError(f"kv dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
        layers = range(cfg.num_hidden_layers)
        return cls(dtype=dtype, num_kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
                   ring_layers=tuple(i for i in layers if cfg.is_sliding(i)),
                   full_layers=tuple(i for i in layers if not cfg.is_sliding(i)),
                   ring_slots=cfg.sliding_window)

    @property
    def itemsize(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def layer_bytes_per_token(self) -> int:
        """K + V of one token in one layer."""
        return 2 * self.num_kv_heads * self.head_dim * self.itemsize

    @property
    def full_bytes_per_token(self) -> int:
        """What one more token costs across the full-attention layers."""
        return len(self.full_layers) * self.layer_bytes_per_token

    @property
    def ring_bytes_per_slot(self) -> int:
        """One ring slot (one token position) across all window layers."""
        return len(self.ring_layers) * self.layer_bytes_per_token

    def capacity(self, layer: int, context: int) -> int:
        """Rows the cache of `layer` holds for a sequence of up to `context` tokens."""
        return self.ring_slots if layer in self.ring_layers else context

    def slot_bytes(self, context: int) -> int:
        """KV bytes of one sequence slot holding `context` tokens."""
        return self.full_bytes_per_token * context + self.ring_bytes_per_slot * self.ring_slots

    @property
    def window_copy_bytes(self) -> int:
        """One copy of every window layer's buffer (what a saved prefix keeps, prefix reuse)."""
        return self.ring_bytes_per_slot * self.ring_slots

    def to_manifest(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "axes": ["batch", "num_kv_heads", "capacity", "head_dim"],
                "num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim,
                "ring_layers": list(self.ring_layers), "full_layers": list(self.full_layers),
                "ring_slots": self.ring_slots,
                "full_bytes_per_token": self.full_bytes_per_token,
                "ring_bytes_per_slot": self.ring_bytes_per_slot}

    @classmethod
    def from_manifest(cls, doc: Mapping[str, Any]) -> "KvLayout":
        try:
            layout = cls(dtype=str(doc["dtype"]), num_kv_heads=int(doc["num_kv_heads"]),
                         head_dim=int(doc["head_dim"]),
                         ring_layers=tuple(int(i) for i in doc["ring_layers"]),
                         full_layers=tuple(int(i) for i in doc["full_layers"]),
                         ring_slots=int(doc["ring_slots"]))
        except KeyError as e:
            raise KvLayoutError(f"kv_layout lacks {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise KvLayoutError(f"kv_layout: {e}") from None
        if layout.dtype not in DTYPE_BYTES:
            raise KvLayoutError(f"kv_layout dtype {layout.dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
        return layout
