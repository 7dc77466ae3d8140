"""Image build check: the installed plugin library loads (its CUDA runtime dependency resolves;
no GPU needed for dlopen) and exports the TensorRT plugin entry points.
    python3 check_plugins.py /opt/gptoss-edge/lib"""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

ENTRY_POINTS = ("getCreators", "setLoggerFinder")


def main(libdir: str) -> int:
    path = Path(libdir) / "libgptoss_edge_plugins.so"
    lib = ctypes.CDLL(str(path))               # OSError names the missing dependency
    missing = [name for name in ENTRY_POINTS if not hasattr(lib, name)]
    if missing:
        print(f"{path}: missing exports {missing}", file=sys.stderr)
        return 1
    print(f"{path}: loads, exports {', '.join(ENTRY_POINTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
