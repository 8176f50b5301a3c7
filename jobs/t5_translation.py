"""T5 translation: a seq2seq model trained, evaluated with sacreBLEU, and used to translate.

    python jobs/t5_translation.py --max-steps 200                # alone, no Ray, one process
    orch run jobs/t5_translation.yaml                           # Ray Train, 2 DDP workers
    orch run jobs/t5_translation.yaml precision=bf16 train.num_beams=1
    orch run jobs/t5_translation.yaml train.pretrained=/models/t5-small   # a local HF directory
    orch translate runs/t5-translation "three hundred and forty-two" --beams 4

Model: `T5ForConditionalGeneration.from_pretrained(train.pretrained)` (a Hub name, or a local
directory written by `save_pretrained`, which loads offline) with that model's tokenizer; else
a fresh `T5Config` sized by train.d_model/d_ff/num_layers/... with the byte-level ByT5
tokenizer (no vocabulary file, 384 ids).

Data: `data.path` (+ optional val_path/test_path), JSONL/CSV/Parquet with the columns
data.source_column and data.target_column; else English->French number words from num2words
with train/val/test on disjoint numbers (orchestrator/data/text.py). Every source gets
`data.prefix` in front ("translate English to French: ").

Evaluation: validation loss plus greedy exact match and chrF on `val_samples` validation pairs
every `eval_every` steps; at the end, sacreBLEU BLEU, chrF and exact match on the test split
with greedy search and with beam search (num_beams), and a table of examples printed by rank 0
and written to <run_dir>/examples.md (all predictions in test_predictions.jsonl).

Checkpoints hold, besides model.pt, the T5 config and the tokenizer choice in state.json, so
`orch translate CHECKPOINT` rebuilds the model without the spec.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import rundir, worker
from orchestrator.worker import OptimArgs

# strategy: pipeline is refused at validation with this reason (orchestrator/worker/pipeline.py).
PIPELINE_UNSUPPORTED = (
    "T5 is an encoder-decoder: every decoder layer's cross-attention reads the encoder's final "
    "output, and the model is fed (input ids, attention mask, labels) with shared embeddings "
    "tied between encoder, decoder and head, so its layers are not one sequence of blocks that "
    "pass a single tensor on; use ddp, fsdp or deepspeed"
)
EXTRAS = ("nlp",)  # transformers, sacreBLEU, num2words: pip install 'orchestrator[nlp]'
SHAPE_KEYS = (
    "pretrained",
    "d_model",
    "d_ff",
    "d_kv",
    "num_heads",
    "num_layers",
    "num_decoder_layers",
    "feed_forward_proj",
)
BYT5_VOCAB = 384  # 3 specials + 256 bytes + 125 sentinel ids: ByT5Tokenizer's fixed vocabulary


class Args(OptimArgs):
    pretrained: str | None = Field(
        None,
        description="HF model name or local save_pretrained directory; default: a fresh T5Config.",
    )
    d_model: int = Field(256, ge=8, le=8192, description="Hidden size (fresh model).")
    d_ff: int = Field(1024, ge=8, le=65_536, description="Feed-forward size (fresh model).")
    d_kv: int = Field(64, ge=4, le=1024, description="Size of one attention head (fresh model).")
    num_heads: int = Field(4, ge=1, le=128, description="Attention heads (fresh model).")
    num_layers: int = Field(3, ge=1, le=96, description="Encoder layers (fresh model).")
    num_decoder_layers: int | None = Field(
        None, ge=1, le=96, description="Decoder layers; default num_layers."
    )
    feed_forward_proj: Literal["relu", "gated-gelu"] = Field(
        "relu", description="T5 v1.0 relu or v1.1 gated-gelu."
    )
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout rate.")
    epochs: int = Field(10, ge=1, le=10_000, description="Passes over the training set.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    batch_size: int = Field(32, ge=1, le=65_536, description="Pairs per worker per step.")
    lr: float = Field(1e-3, gt=0, le=10, description="Peak learning rate.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "linear", description="Decay after warm-up."
    )
    warmup_steps: int = Field(100, ge=0, le=10**9, description="Linear warm-up from 0.")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the global gradient norm.")
    max_source_len: int = Field(
        192, ge=4, le=16_384, description="Truncate sources to this many tokens."
    )
    max_target_len: int = Field(
        128, ge=4, le=16_384, description="Truncate targets to this many tokens."
    )
    eval_every: int = Field(250, ge=1, le=10**9, description="Validate every N steps.")
    val_samples: int = Field(
        200, ge=0, le=10**7, description="Validation pairs decoded (greedy) per check."
    )
    test_samples: int | None = Field(None, ge=1, description="Decode only the first N test pairs.")
    num_beams: int = Field(4, ge=1, le=64, description="Beam width for the beam-search evaluation.")
    eval_batch_size: int = Field(128, ge=1, le=65_536, description="Pairs per generate() call.")
    max_new_tokens: int = Field(
        96, ge=1, le=16_384, description="Longest generated output, in tokens."
    )
    examples: int = Field(8, ge=0, le=1000, description="Rows in the examples table at the end.")
    cpu_budget_s: float | None = Field(
        None,
        gt=0,
        description="Stop training once the workers together used this many CPU-seconds.",
    )
    time_budget_s: float | None = Field(
        None, gt=0, description="Stop training after this many wall-clock seconds (this attempt)."
    )


class DataArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(
        None, description="Training pairs (.jsonl/.csv/.parquet); default: num2words corpus."
    )
    val_path: str | None = Field(None, description="Validation pairs; default: cut from path.")
    test_path: str | None = Field(None, description="Test pairs; default: cut from path.")
    format: Literal["auto", "jsonl", "csv", "parquet"] = Field(
        "auto", description="File format; auto: by suffix."
    )
    source_column: str = Field("en", min_length=1, description="Column holding the source text.")
    target_column: str = Field("fr", min_length=1, description="Column holding the target text.")
    prefix: str = Field(
        "translate English to French: ", description="Task prefix put before every source."
    )
    n_val: int = Field(
        500, ge=1, le=10**8, description="Validation pairs (generated corpus, or cut from path)."
    )
    n_test: int = Field(
        1000, ge=1, le=10**8, description="Test pairs (generated corpus, or cut from path)."
    )
    split_seed: int = Field(0, ge=0, description="Fixes which numbers/rows go to which split.")
    max_number: int = Field(
        9999, ge=10, le=10**12, description="Generated corpus: numbers 0..max_number."
    )
    n_train: int | None = Field(None, ge=1, description="Generated corpus: cap on training pairs.")
    source_lang: str = Field(
        "en", description="Generated corpus: num2words language of the source."
    )
    target_lang: str = Field(
        "fr", description="Generated corpus: num2words language of the target."
    )


# --- model and tokenizer ---------------------------------------------------------------------


def t5_config(args: Args, vocab_size: int = BYT5_VOCAB):
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=args.d_model,
        d_ff=args.d_ff,
        d_kv=args.d_kv,
        num_heads=args.num_heads,
        num_layers=args.num_layers,
        num_decoder_layers=args.num_decoder_layers or args.num_layers,
        feed_forward_proj=args.feed_forward_proj,
        dropout_rate=args.dropout,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,  # T5 starts decoding at pad
    )


def build_model(args: Args):
    """T5ForConditionalGeneration: from_pretrained(args.pretrained), else from a T5Config."""
    from transformers import T5ForConditionalGeneration

    if args.pretrained:
        return T5ForConditionalGeneration.from_pretrained(
            args.pretrained, **_local_kwargs(args.pretrained)
        )
    return T5ForConditionalGeneration(t5_config(args))


def model_from_config(config: dict):
    """An untrained T5 of the shape a checkpoint recorded (its weights come from model.pt)."""
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config.from_dict(dict(config)))


def build_tokenizer(pretrained: str | None):
    if pretrained:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(pretrained, **_local_kwargs(pretrained))
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def _local_kwargs(name: str) -> dict:
    # A directory on disk never needs the Hub: say so, so nothing is tried even when online.
    return {"local_files_only": True} if Path(name).expanduser().is_dir() else {}


def model_state(model, args: Args, tokenizer_dir: str | None) -> dict:
    """What `orch translate` needs, besides model.pt, to rebuild model and tokenizer."""
    tok = (
        {"kind": "pretrained", "source": args.pretrained, "dir": tokenizer_dir}
        if args.pretrained
        else {"kind": "byt5"}
    )
    return {"t5_config": json.loads(model.config.to_json_string()), "tokenizer": tok}


# --- data ------------------------------------------------------------------------------------


def load_data(data: DataArgs):
    from orchestrator.data.text import load_splits

    return load_splits(
        path=data.path,
        val_path=data.val_path,
        test_path=data.test_path,
        source_column=data.source_column,
        target_column=data.target_column,
        fmt=data.format,
        n_val=data.n_val,
        n_test=data.n_test,
        seed=data.split_seed,
        **(
            {}
            if data.path
            else dict(
                max_number=data.max_number,
                n_train=data.n_train,
                source_lang=data.source_lang,
                target_lang=data.target_lang,
            )
        ),
    )


def encode(tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_len)["input_ids"]


def collate(batch, pad_id: int):
    """[(source_ids, target_ids)] -> padded input_ids, attention_mask, labels (-100 = ignore)."""
    import torch

    n = len(batch)
    s_len = max(len(s) for s, _ in batch)
    t_len = max(len(t) for _, t in batch)
    ids = torch.full((n, s_len), pad_id, dtype=torch.long)
    mask = torch.zeros((n, s_len), dtype=torch.long)
    labels = torch.full((n, t_len), -100, dtype=torch.long)
    for i, (s, t) in enumerate(batch):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, : len(t)] = torch.tensor(t)
    return ids, mask, labels


# --- generation and metrics ------------------------------------------------------------------


def generate(
    model,
    tokenizer,
    texts: list[str],
    *,
    device,
    num_beams: int = 1,
    batch_size: int = 64,
    max_new_tokens: int = 96,
    max_source_len: int = 192,
    autocast=None,
    synced_gpus: bool = False,
) -> list[str]:
    """Translate `texts` (prefix already on them) in batches of similar length; input order kept."""
    import contextlib

    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[str] = [""] * len(texts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_source_len,
            ).to(device)
            with torch.no_grad(), autocast or contextlib.nullcontext():
                gen = model.generate(
                    **enc,
                    num_beams=num_beams,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    synced_gpus=synced_gpus,
                )
            for i, text in zip(
                idx, tokenizer.batch_decode(gen, skip_special_tokens=True), strict=True
            ):
                out[i] = text.strip()
    finally:
        model.train(was_training)
    return out


def scores(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """sacreBLEU corpus BLEU and chrF (0-100) and exact match (0-1)."""
    import sacrebleu

    if not hyps:
        return {"bleu": 0.0, "chrf": 0.0, "exact_match": 0.0}
    return {
        "bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
        "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
        "exact_match": sum(h.strip() == r.strip() for h, r in zip(hyps, refs, strict=True))
        / len(hyps),
    }


def _gather(items: list, sess) -> list:
    """Every rank's list, concatenated in rank order, on every rank."""
    if sess.world_size == 1:
        return list(items)
    import torch.distributed as dist

    parts: list = [None] * sess.world_size
    dist.all_gather_object(parts, items)
    return [x for p in parts for x in p]


def _generation_model(model, sess):
    # DDP: the plain module (generate() is not a DDP method, and no gradient sync is needed).
    # Sharded strategies keep the wrapper; each rank runs generate() in lockstep (synced_gpus).
    return sess.unwrap(model) if sess.strategy in ("ddp", "auto") else model


def decode_split(
    model, tokenizer, pairs, prefix: str, sess, args: Args, num_beams: int
) -> list[str]:
    """Hypotheses for `pairs`, each rank decoding an equal slice; the full list on every rank."""
    n = len(pairs)
    per = -(-n // sess.world_size)
    mine = list(range(sess.rank * per, min(n, (sess.rank + 1) * per)))
    sharded = sess.world_size > 1 and sess.strategy not in ("ddp", "auto")
    texts = [prefix + pairs[i].source for i in mine]
    if sharded:  # lockstep generate(): every rank the same number of batches
        texts += [prefix + pairs[-1].source] * (per - len(texts))
    gen_model = _generation_model(model, sess)
    hyps = generate(
        gen_model,
        tokenizer,
        texts,
        device=sess.device,
        num_beams=num_beams,
        batch_size=args.eval_batch_size,
        max_new_tokens=args.max_new_tokens,
        max_source_len=args.max_source_len,
        autocast=sess.autocast(),
        synced_gpus=sharded,
    )[: len(mine)]
    return _gather(hyps, sess)


def val_batches(ds, sess, batch_size: int, pad_id: int) -> list:
    """This rank's validation batches. Every rank gets the same number of batches (a short
    slice is padded with copies whose labels are all ignored), so sharded strategies, whose
    forward passes are collectives, stay in lockstep."""
    per = -(-len(ds) // sess.world_size)
    mine = ds[sess.rank * per : (sess.rank + 1) * per]
    mine = mine + [(s, [-100] * len(t)) for s, t in (ds[: per - len(mine)])]
    return [collate(mine[i : i + batch_size], pad_id) for i in range(0, len(mine), batch_size)]


def val_loss(model, batches, sess) -> float:
    """Mean token cross-entropy over the validation split (all ranks together)."""
    import torch

    model = _generation_model(model, sess)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    with torch.no_grad():
        for ids, mask, labels in batches:
            with sess.autocast():
                loss = model(
                    input_ids=ids.to(sess.device),
                    attention_mask=mask.to(sess.device),
                    labels=labels.to(sess.device),
                ).loss
            tokens = float((labels != -100).sum())
            if tokens:
                total += loss.item() * tokens
                count += tokens
    model.train(was_training)
    total, count = sess.all_reduce_sum([total, count])
    return total / max(count, 1.0)


def examples_table(pairs, greedy: list[str], beam: list[str], n: int) -> tuple[str, str]:
    """(plain text for the log, markdown for examples.md) of the first n test pairs."""
    rows = [(p.source, p.target, g, b) for p, g, b in zip(pairs[:n], greedy, beam, strict=False)]
    head = ("source", "reference", "greedy", "beam")
    widths = [min(48, max([len(head[c])] + [len(r[c]) for r in rows])) for c in range(4)]

    def cut(s: str, w: int) -> str:
        return s if len(s) <= w else s[: w - 1] + "~"

    def line(cells, mark=""):
        return "  ".join(cut(c, w).ljust(w) for c, w in zip(cells, widths, strict=True)) + mark

    text = [line(head, "  ok"), line(["-" * w for w in widths])]
    md = ["| source | reference | greedy | beam | exact (greedy/beam) |", "|---|---|---|---|---|"]
    for r in rows:
        ok = ("y" if r[2] == r[1] else "n") + "/" + ("y" if r[3] == r[1] else "n")
        text.append(line(r, f"  {ok}"))
        md.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + f" | {ok} |")
    return "\n".join(text), "\n".join(md) + "\n"


# --- the loop --------------------------------------------------------------------------------


def train_loop(config: dict) -> dict:
    from torch.utils.data import DataLoader

    args = Args.model_validate(config.get("train", {}))
    data = DataArgs.model_validate(config.get("data", {}))
    sess = worker.setup(config)
    # The tokenizer copy of a pretrained model sits beside the checkpoints of a local run dir.
    run_dir = Path(sess.run_dir) if sess.local_run_dir else None

    splits = load_data(data)
    tokenizer = build_tokenizer(args.pretrained)
    tokenizer_dir = None
    if args.pretrained and run_dir is not None:
        tokenizer_dir = str(run_dir / "tokenizer")  # a copy beside the checkpoints, for translate
        if sess.is_main:
            tokenizer.save_pretrained(tokenizer_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def encoded(pairs):
        src = encode(tokenizer, [data.prefix + p.source for p in pairs], args.max_source_len)
        tgt = encode(tokenizer, [p.target for p in pairs], args.max_target_len)
        return list(zip(src, tgt, strict=True))

    train_ds = encoded(splits["train"])
    val_ds = encoded(splits["val"])
    sampler = worker.distributed_sampler(train_ds, sess, shuffle=True)
    loader = DataLoader(
        train_ds,
        batch_size=args.batch_size,
        sampler=sampler,
        collate_fn=lambda b: collate(b, pad_id),
    )
    val_set = val_batches(val_ds, sess, args.eval_batch_size, pad_id)
    steps_per_epoch = len(loader)
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)

    model, _opt, _sched = sess.prepare(
        build_model(args), args, max(1, total_steps // args.grad_accum)
    )
    saved = model_state(sess.unwrap(model), args, tokenizer_dir)
    scored = ("val_chrf", "val_exact_match") if args.val_samples else ()
    sess.set_progress(total_steps, metrics=("loss", "val_loss", *scored))
    state = sess.restore() or {}
    step = int(state.get("step", 0))
    val = {k: state[k] for k in ("val_loss", "val_exact_match", "val_chrf") if k in state}
    loss_value = float("nan")
    if sess.is_main:
        n_params = sum(p.numel() for p in sess.unwrap(model).parameters())
        print(
            f"[t5] {n_params / 1e6:.2f}M parameters; {len(train_ds)} train / {len(val_ds)} val / "
            f"{len(splits['test'])} test pairs; {total_steps} steps of {args.batch_size} x "
            f"{sess.world_size} worker(s)",
            flush=True,
        )

    def validate() -> dict:
        out = {"val_loss": val_loss(model, val_set, sess)}
        if args.val_samples:
            pairs = splits["val"][: args.val_samples]
            hyps = decode_split(model, tokenizer, pairs, data.prefix, sess, args, num_beams=1)
            s = scores(hyps, [p.target for p in pairs])
            out.update(val_exact_match=s["exact_match"], val_chrf=s["chrf"])
        return out

    tokens_seen, tokens_t0 = 0.0, time.perf_counter()
    cpu0 = float(state.get("cpu_s", 0.0))  # CPU of earlier attempts, when resuming
    wall0 = time.perf_counter()
    stop_reason = ""

    def used() -> dict:
        """CPU-seconds of all workers together (this run, resumes included), wall of this
        attempt."""
        cpu = sess.all_reduce_sum([time.process_time()])[0]
        return {"cpu_s": cpu0 + cpu, "wall_s": time.perf_counter() - wall0}

    epoch = step // steps_per_epoch
    while step < total_steps and not stop_reason:
        epoch, skip = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)  # same order on resume: skip what this epoch already saw
        for i, (ids, mask, labels) in enumerate(loader):
            if i < skip:
                continue
            with sess.autocast():
                loss = model(
                    input_ids=ids.to(sess.device),
                    attention_mask=mask.to(sess.device),
                    labels=labels.to(sess.device),
                ).loss
            sess.backward(loss)
            step += 1
            loss_value = loss.item()
            tokens_seen += float(mask.sum() + (labels != -100).sum())
            if step % args.eval_every == 0 or step == total_steps:
                val = validate()
            if step == total_steps:
                break
            log_now = step % args.log_every == 0 or step % args.eval_every == 0
            if not (log_now or sess.should_checkpoint(step)):
                continue
            row = {"loss": loss_value, "epoch": epoch, **val, **used()}
            if args.cpu_budget_s and row["cpu_s"] >= args.cpu_budget_s:
                stop_reason = f"cpu budget {args.cpu_budget_s:g} s used at step {step}"
            elif args.time_budget_s and row["wall_s"] >= args.time_budget_s:
                stop_reason = f"time budget {args.time_budget_s:g} s used at step {step}"
            if stop_reason:  # every rank saw the same all-reduced figures: all stop here
                if sess.is_main:
                    print(f"[t5] stopping early: {stop_reason}", flush=True)
                if step % args.eval_every:
                    val = validate()
                break
            if sess.should_checkpoint(step):
                sess.save_checkpoint(step, row, state={**saved, **val, "cpu_s": row["cpu_s"]})
            else:
                t = sess.throughput(step, args.batch_size)
                now = time.perf_counter()  # source + target tokens, all workers
                t["tokens_per_s"] = tokens_seen * sess.world_size / max(1e-9, now - tokens_t0)
                tokens_seen, tokens_t0 = 0.0, now
                sess.log({**row, **t}, step)

    # -- test: greedy and beam search ----------------------------------------------------------
    test = splits["test"][: args.test_samples] if args.test_samples else splits["test"]
    refs = [p.target for p in test]
    t0 = time.perf_counter()
    greedy = decode_split(model, tokenizer, test, data.prefix, sess, args, num_beams=1)
    t_greedy = time.perf_counter() - t0
    beam = (
        decode_split(model, tokenizer, test, data.prefix, sess, args, num_beams=args.num_beams)
        if args.num_beams > 1
        else greedy
    )
    t_beam = time.perf_counter() - t0 - t_greedy
    g, b = scores(greedy, refs), scores(beam, refs)
    final = {
        "loss": loss_value,
        **val,
        "epoch": epoch,
        **used(),
        "stopped_early": stop_reason or "no",
        **{f"greedy_{k}": v for k, v in g.items()},
        **{f"beam_{k}": v for k, v in b.items()},
        **b,  # bleu / chrf / exact_match: the beam-search figures
        "num_beams": args.num_beams,
        "test_pairs": len(test),
        "greedy_decode_s": t_greedy,
        "beam_decode_s": t_beam,
    }
    if sess.is_main:
        text, md = examples_table(test, greedy, beam, args.examples)
        summary = (
            f"test ({len(test)} pairs)  greedy: BLEU {g['bleu']:.2f} chrF {g['chrf']:.2f} "
            f"exact {g['exact_match']:.2%}   beam={args.num_beams}: BLEU {b['bleu']:.2f} "
            f"chrF {b['chrf']:.2f} exact {b['exact_match']:.2%}"
        )
        print(f"\n{summary}\n{text}\n", flush=True)
        if sess.run_dir and sess.is_main:  # a local folder or a bucket alike
            rundir.write_text(sess.run_dir, "examples.md", f"{summary}\n\n{md}")
            predictions = "".join(
                json.dumps(
                    {"source": p.source, "reference": p.target, "greedy": gh, "beam": bh},
                    ensure_ascii=False,
                )
                + "\n"
                for p, gh, bh in zip(test, greedy, beam, strict=True)
            )
            rundir.write_text(sess.run_dir, "test_predictions.jsonl", predictions)
    sess.finish(final, step, state={**saved, **val, "cpu_s": final["cpu_s"]})
    return final


def main(argv: list[str] | None = None) -> None:
    from orchestrator.worker.standalone import run_alone

    r = run_alone(sys.modules[__name__], argv)
    print(
        f"test chrF {r['chrf']:.2f}  BLEU {r['bleu']:.2f}  exact match {r['exact_match']:.2%}"
        f"  (beam {r['num_beams']}; greedy: chrF {r['greedy_chrf']:.2f}, "
        f"exact {r['greedy_exact_match']:.2%})"
    )


if __name__ == "__main__":
    main()
