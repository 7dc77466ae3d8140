"""`gptoss-edge plan CHECKPOINT_OR_PRESET --target tensorrt|onnxruntime --context N --batch B`:
the memory plan of an engine before building it (compiler/plan.py)."""
from __future__ import annotations

import argparse
import json
import sys

from gptoss_edge.compiler import formats
from gptoss_edge.compiler import plan as P
from gptoss_edge.compiler.config import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("plan", help="memory plan of an engine (weights, KV cache, activations); "
                        "exit status 1 when it does not fit the budget",
                        description=P.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("model", help="checkpoint directory, config.json, or preset (" + ", ".join(PRESETS) + ")")
    sp.add_argument("--target", choices=P.TARGETS, default="tensorrt")
    sp.add_argument("--context", type=int, default=8192, help="tokens per sequence (prompt + generated)")
    sp.add_argument("--batch", type=int, default=1, help="sequences held at once")
    sp.add_argument("--dense", choices=("4bit", "8bit", "16bit"), default=None,
                    help="q/k/v/o and lm_head: 4-bit blocks, 8-bit blocks (onnxruntime) or the activation "
                         "precision (default: 16bit when that fits the budget, else 4bit)")
    sp.add_argument("--dense-format", choices=("mxfp4", "int4"), default="mxfp4")
    sp.add_argument("--experts", help=f"tensorrt: mxfp4; onnxruntime: {'|'.join(formats.EXPERTS)} (default mxfp4)")
    sp.add_argument("--precision", choices=tuple(P.PRECISION_BYTES), help="default: tensorrt fp16, onnxruntime fp32")
    sp.add_argument("--chunk", type=int, default=512, help="prefill tokens per row per step")
    sp.add_argument("--budget-gb", type=float, default=14.0, help="usable device memory (16 GB device: ~14)")
    sp.add_argument("--json", action="store_true", help="print the plan as JSON")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg, name = P.resolve_model(args.model)
        kw = dict(target=args.target, batch=args.batch, dense_format=args.dense_format,
                  experts=args.experts, precision=args.precision, chunk=args.chunk,
                  budget_gb=args.budget_gb, model=name)
        dense = args.dense or P.default_dense(cfg, context=args.context, **kw)
        plan = P.memory_plan(cfg, context=args.context, dense=dense, **kw)
        best = P.max_context(cfg, dense=dense, **kw)
    except (P.PlanError, ValueError) as e:
        print(f"gptoss-edge plan: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**P.plan_to_dict(plan), "max_context": best}, indent=2))
    else:
        print(P.format_plan(plan, best))
    return 0 if plan.fits else 1
