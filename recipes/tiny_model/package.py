"""Assemble the shipped default model and the fixtures its tests use.

    python recipes/tiny_model/package.py WORK_DIR MODEL_DIR TEST_DATA_DIR
copies WORK_DIR/mxfp4/{config.json,model.safetensors} and WORK_DIR/tokenizer/* into MODEL_DIR,
writes MODEL_DIR/generation_config.json (stops on <|return|>, <|call|>, <|endoftext|>),
MODEL_DIR/tools/lookup_signature.json (the tool the model was trained to call, in the
name/description/parameters form `gptoss-edge chat --tool` reads), and into TEST_DATA_DIR a
held-out text sample plus 16 evaluation chats with the tool table they need.

    python recipes/tiny_model/package.py --figures WORK_DIR MODEL_DIR TEST_DATA_DIR
afterwards records the evaluation figures (WORK_DIR/eval_*.json, train_log.json) in
MODEL_DIR/figures.json, measuring the test fixtures' perplexity with the shipped checkpoint.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

import harmony_text as ht
from evaluate import SEQ_LEN, load_model, load_table, load_tokenizer, perplexity, heldout_windows, \
    sample_prompts

SAMPLE_WINDOWS = 16       # 16 x 512 held-out tokens for the fast test
SAMPLE_CHATS = 16


def assemble(work: Path, model_dir: Path, test_data: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(work / "mxfp4" / name, model_dir / name)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(work / "tokenizer" / name, model_dir / name)
    tok = load_tokenizer(model_dir)
    gen = {"eos_token_id": [tok.token_to_id(t) for t in (ht.RETURN, ht.CALL, ht.ENDOFTEXT)],
           "pad_token_id": tok.token_to_id(ht.ENDOFTEXT), "do_sample": False}
    (model_dir / "generation_config.json").write_text(json.dumps(gen, indent=1))
    (model_dir / "tools").mkdir(exist_ok=True)
    tool = {"name": ht.TOOL_NAME, "description": ht.TOOL_DESCRIPTION, "parameters": ht.TOOL_PARAMETERS}
    (model_dir / "tools" / "lookup_signature.json").write_text(json.dumps(tool, indent=1) + "\n")

    test_data.mkdir(parents=True, exist_ok=True)
    held = (work / "data" / "heldout.txt").read_text(encoding="utf-8")
    ids = tok.encode(held).ids[:SAMPLE_WINDOWS * SEQ_LEN]
    (test_data / "tiny_model_heldout.txt").write_text(tok.decode(ids, skip_special_tokens=False),
                                                      encoding="utf-8")
    chats = sample_prompts(work / "data", SAMPLE_CHATS, seed=99)
    table = load_table(work / "data")
    needed = {c["name"] for c in chats}
    fixture = {"chats": chats, "entries": [vars(table[n]) for n in sorted(needed)]}
    (test_data / "tiny_model_chats.json").write_text(json.dumps(fixture, indent=1))


def record_figures(work: Path, model_dir: Path, test_data: Path) -> dict:
    model = load_model(model_dir, mxfp4=True)
    tok = load_tokenizer(model_dir)
    sample = heldout_windows(tok, (test_data / "tiny_model_heldout.txt").read_text(encoding="utf-8"))
    train_log = json.loads((work / "fp32" / "train_log.json").read_text())
    figures = {
        "params": train_log["params"], "train_seconds": train_log["train_seconds"],
        "train_tokens_per_epoch": train_log["train_tokens"], "steps": train_log["steps"],
        "batch": train_log["batch"], "seq_len": train_log["seq_len"],
        "final_train_loss": train_log["history"][-1]["loss"],
        "test_sample_ppl_mxfp4": round(perplexity(model, sample), 4),
        "test_sample_tokens": int(sample.numel()),
    }
    for kind in ("fp32", "mxfp4"):
        path = work / f"eval_{kind}.json"
        if path.exists():
            ev = json.loads(path.read_text())
            figures[f"heldout_ppl_{kind}"] = ev["heldout_ppl"]
            figures["heldout_tokens"] = ev["heldout_tokens"]
            if "heldout_assistant_ppl" in ev:
                figures[f"heldout_assistant_ppl_{kind}"] = ev["heldout_assistant_ppl"]
                figures["heldout_assistant_tokens"] = ev["heldout_assistant_tokens"]
            if "quality" in ev:
                figures[f"quality_{kind}"] = {k: v for k, v in ev["quality"].items() if k != "failures"}
            if "quality_heldout" in ev:
                figures[f"quality_heldout_{kind}"] = {k: v for k, v in ev["quality_heldout"].items()
                                                      if k != "failures"}
    (model_dir / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("work", type=Path)
    p.add_argument("model_dir", type=Path)
    p.add_argument("test_data", type=Path)
    p.add_argument("--figures", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.figures:
        print(json.dumps(record_figures(a.work, a.model_dir, a.test_data), indent=1))
    else:
        assemble(a.work, a.model_dir, a.test_data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
