"""`orch translate`: load a t5_translation checkpoint and translate text with it.

    orch translate runs/t5-translation "three hundred and forty-two"          # latest checkpoint
    orch translate runs/t5-translation/checkpoint_003000 "twelve" "ninety-one" --beams 4
    orch translate runs/t5-translation --file numbers.txt --batch-size 64     # one text a line
    echo "seventy-one" | orch translate runs/t5-translation --file -
    orch translate runs/t5-translation "eighty" --table                       # source + output

CHECKPOINT is a checkpoint_NNNNNN directory or a run directory (its newest complete
checkpoint is used). The model is rebuilt from what the checkpoint recorded (the T5 config and
tokenizer choice in state.json, the weights in model.pt), and the training task prefix
("translate English to French: ") is put before each text unless it is already there or
--no-prefix is given. Translations print one per line, in input order.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import rundir
from orchestrator.errors import CheckpointError, ExitCode, OrchestratorError


class TranslateInputError(OrchestratorError):
    """No text to translate, or an unreadable --file."""

    exit_code = ExitCode.BAD_INPUT


@dataclass
class Translator:
    model: Any
    tokenizer: Any
    prefix: str
    num_beams: int
    max_new_tokens: int
    max_source_len: int
    device: Any
    checkpoint: Path

    def translate(
        self,
        texts: list[str],
        beams: int | None = None,
        batch_size: int = 32,
        max_new_tokens: int | None = None,
        add_prefix: bool = True,
    ) -> list[str]:
        from jobs.t5_translation import generate

        if add_prefix and self.prefix:
            texts = [t if t.startswith(self.prefix) else self.prefix + t for t in texts]
        return generate(
            self.model,
            self.tokenizer,
            texts,
            device=self.device,
            num_beams=beams or self.num_beams,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            max_source_len=self.max_source_len,
        )


def _tokenizer(info: dict, ckpt: Path):
    from jobs.t5_translation import build_tokenizer

    kind = info.get("kind", "byt5")
    if kind == "byt5":
        return build_tokenizer(None)
    candidates = [info.get("dir"), str(ckpt.parent / "tokenizer"), info.get("source")]
    for c in candidates:
        if c and Path(c).is_dir():
            return build_tokenizer(c)
    if info.get("source"):  # a Hub name: from the local HF cache, or the Hub when online
        try:
            return build_tokenizer(info["source"])
        except OSError as exc:
            raise CheckpointError(
                f"{ckpt}: cannot load the tokenizer '{info['source']}' the model was trained "
                f"with ({str(exc).splitlines()[0]}); the run dir's tokenizer/ copy is missing too"
            ) from None
    raise CheckpointError(f"{ckpt}: state.json names no tokenizer to load")


def load_translator(checkpoint: str | Path, device: str | None = None) -> Translator:
    """Rebuild model + tokenizer from a t5_translation checkpoint (or run dir)."""
    import torch

    from jobs.t5_translation import Args, DataArgs, model_from_config

    ckpt = rundir.resolve_checkpoint(checkpoint)
    try:
        state = json.loads((ckpt / "state.json").read_text())
        config = (
            json.loads((ckpt / "config.json").read_text())
            if (ckpt / "config.json").exists()
            else {}
        )
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{ckpt}: cannot read state.json/config.json: {exc}") from None
    if "t5_config" not in state:
        what = config.get("workload") or "another workload"
        raise CheckpointError(
            f"{ckpt}: not a t5_translation checkpoint (state.json has no "
            f"t5_config; it was written by {what})"
        )
    if not (ckpt / "model.pt").exists():
        sharded = [d for d in ("dcp", "deepspeed") if (ckpt / d).is_dir()]
        hint = (
            (
                f" it holds sharded {state.get('strategy', '')} weights ({', '.join(sharded)}/); "
                "consolidate them into model.pt first (torch.distributed.checkpoint.format_utils."
                "dcp_to_torch_save, or DeepSpeed's zero_to_fp32.py), or train with strategy: ddp"
            )
            if sharded
            else ""
        )
        raise CheckpointError(f"{ckpt}: no model.pt;{hint or ' the checkpoint is damaged'}")
    model = model_from_config(state["t5_config"])
    try:
        weights = torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(weights)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"{ckpt}/model.pt does not fit the recorded T5 config: {str(exc).splitlines()[0]}"
        ) from None
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev).eval()
    args = Args.model_validate(config.get("train") or {})
    data = DataArgs.model_validate(config.get("data") or {})
    return Translator(
        model=model,
        tokenizer=_tokenizer(state.get("tokenizer") or {}, ckpt),
        prefix=data.prefix,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        max_source_len=args.max_source_len,
        device=dev,
        checkpoint=ckpt,
    )


def read_texts(texts: list[str] | None, file: str | None) -> list[str]:
    out = list(texts or [])
    if file:
        try:
            raw = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TranslateInputError(f"--file {file}: cannot read it ({exc})") from None
        out += [line.strip() for line in raw.splitlines() if line.strip()]
    if not out:
        raise TranslateInputError(
            "nothing to translate: give TEXT arguments or --file FILE (one text per line)"
        )
    return out
