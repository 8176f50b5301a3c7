"""Compress a trained model: factorize, prune, fine-tune, quantize, export; report every stage.

    orch compress runs/mnist-mlp --prune 0.9 --finetune-steps 300          # latest checkpoint
    orch compress runs/mnist-mlp/checkpoint_000465 --quantize int8 --export onnx
    orch compress runs/mnist-mlp --prune 0.5 --structured --finetune-steps 300
    orch compress runs/mnist-mlp --low-rank 0.5 --finetune-steps 200 --export torchscript
    orch compress runs/resnet --prune 0.5 --quantize int8    # static int8 when a calibration set exists

or as a `compress:` section of a job spec, run after a successful `orch run`:

    compress: {prune: 0.9, finetune_steps: 300, quantize: int8, export: [onnx]}

Stages run in this order, each optional: low-rank factorization (each chosen Linear becomes two
smaller Linears from its truncated SVD), pruning (global L1 unstructured, or structured
neurons/channels; made permanent, so the saved model holds no masks), fine-tuning (the pruned
zeros stay zero), int8 quantization (dynamic for Linear/LSTM/GRU through
torch.ao.quantization.quantize_dynamic; static for conv nets through FX graph mode with a
calibration set), export (ONNX checked against onnxruntime, TorchScript checked against eager).
After each stage the report measures parameters, non-zero parameters, size on disk, CPU
latency (median, batch 1 and 64) and the task metric. A layer type a stage cannot handle is
named in that stage's notes and left as it is.

Output: `<run_dir>/compress_<timestamp>/` with model.pt (the whole module, torch.load with
weights_only=False), report.json, report.md, and model.onnx / model.int8.onnx /
model.torchscript.pt when exported. Ledger rows: kind=compress (parent_run = the source run)
and kind=export (parent_run = the compress row): run -> compressed model -> export.

A workload tells compress about its task through optional module functions (see
docs/compression.md): `example_inputs(config, batch_size)`, `compress_eval(model, config)`,
`train_batches(config, batch_size)`, `compress_loss(model, batch)`,
`calibration_batches(config, num_batches)`. The MNIST MLP needs none (built in here).
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import io
import json
import statistics
import time
import uuid
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import CheckpointError, OrchestratorError

# ---------------------------------------------------------------------------------------------
# The spec (the `compress:` section and the CLI flags)


class CompressError(OrchestratorError):
    """A compression stage cannot run as asked (missing hook, bad checkpoint, failed export)."""

    exit_code = 5


class CompressSpec(BaseModel):
    """What to do to a trained model. Every stage is optional; they run in the order below."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    low_rank: float | None = Field(
        None, gt=0, le=1, description="Keep this fraction of each Linear's full rank (0.5 = half)."
    )
    low_rank_energy: float | None = Field(
        None, gt=0, le=1,
        description="Or: the smallest rank keeping this fraction of the squared singular values.",
    )
    prune: float | None = Field(None, gt=0, lt=1, description="Fraction of weights to remove.")
    structured: bool = Field(
        False, description="Remove whole neurons/channels (L1 norm per layer) instead of weights."
    )
    finetune_steps: int = Field(0, ge=0, le=10**7, description="Training steps after pruning.")
    finetune_lr: float = Field(1e-4, gt=0, le=1, description="Adam learning rate for fine-tuning.")
    finetune_batch_size: int = Field(64, ge=1, le=65_536, description="Fine-tuning batch size.")
    quantize: Literal["int8"] | None = Field(None, description="int8 quantization.")
    quantize_mode: Literal["auto", "dynamic", "static"] = Field(
        "auto", description="auto: static for conv nets with a calibration set, else dynamic."
    )
    calibration_batches: int = Field(8, ge=1, le=10_000, description="Batches for static int8.")
    export: list[Literal["onnx", "torchscript"]] = Field(
        default_factory=list, description="Export formats, checked against the PyTorch model."
    )
    onnx_atol: float = Field(1e-4, gt=0, description="Largest ONNX-vs-PyTorch difference allowed.")
    layers: list[str] = Field(
        default_factory=list, description="Module-name globs to compress (default: all it can)."
    )
    exclude: list[str] = Field(default_factory=list, description="Module-name globs to leave.")
    latency_repeats: int = Field(20, ge=1, le=10_000, description="Timed batches per latency.")
    out: str | None = Field(None, description="Output folder (default <run_dir>/compress_<time>).")

    @model_validator(mode="after")
    def _consistent(self) -> CompressSpec:
        if self.low_rank is not None and self.low_rank_energy is not None:
            raise ValueError("set low_rank (a rank ratio) or low_rank_energy, not both")
        if self.structured and self.prune is None:
            raise ValueError("structured: true needs prune: <fraction> (e.g. prune: 0.5)")
        if self.finetune_steps and self.prune is None and not self.wants_low_rank:
            raise ValueError("finetune_steps recovers accuracy after prune or low_rank; set one")
        if not (self.wants_low_rank or self.prune or self.quantize or self.export):
            raise ValueError("nothing to do: set prune, low_rank, low_rank_energy, quantize or export")
        return self

    @property
    def wants_low_rank(self) -> bool:
        return self.low_rank is not None or self.low_rank_energy is not None


def parse_spec(data: dict[str, Any], source: str = "compress") -> CompressSpec:
    """Validate a compress section/flags dict; raise SpecError naming each bad field."""
    from orchestrator.errors import SpecError
    from orchestrator.spec import pydantic_errors

    try:
        return CompressSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(pydantic_errors(exc, CompressSpec, prefix="compress"), source) from None


# ---------------------------------------------------------------------------------------------
# Adapters: what compress needs to know about a model's task


@dataclass
class Adapter:
    """How to feed, score and train one model. Build one for any nn.Module, or let a workload
    provide hooks (`adapter_for_workload`).

    example_inputs(batch_size) -> tuple of tensors for `wrap(model)(*inputs)`.
    evaluate(model) -> {"metric": value, ...}: the first item is the headline (higher is better).
    train_batches(batch_size) -> endless iterator of batches for fine-tuning.
    loss(model, batch) -> scalar tensor; default: cross-entropy of model(*batch[:-1]) on batch[-1].
    calibration_batches(n) -> list of input tuples for static int8.
    wrap(model) -> nn.Module whose forward takes example_inputs positionally and returns one
    tensor (latency, export); default: the model itself.
    """

    example_inputs: Callable[[int], tuple]
    evaluate: Callable[[Any], dict[str, float]] | None = None
    train_batches: Callable[[int], Iterator[tuple]] | None = None
    loss: Callable[[Any, tuple], Any] | None = None
    calibration_batches: Callable[[int], list[tuple]] | None = None
    wrap: Callable[[Any], Any] | None = None
    input_names: list[str] | None = None

    def module(self, model):
        return self.wrap(model) if self.wrap is not None else model

    def compute_loss(self, model, batch):
        if self.loss is not None:
            return self.loss(model, batch)
        import torch.nn.functional as F

        return F.cross_entropy(model(*batch[:-1]), batch[-1])


def _endless(tensors: tuple, batch_size: int, seed: int = 0) -> Iterator[tuple]:
    import torch

    g = torch.Generator().manual_seed(seed)
    n = len(tensors[0])
    while True:
        order = torch.randperm(n, generator=g)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            yield tuple(t[idx] for t in tensors)


def classifier_adapter(x_train, y_train, x_test, y_test, eval_batch: int = 512) -> Adapter:
    """An adapter for a classifier on in-memory tensors: accuracy, cross-entropy, real inputs."""
    import torch

    x_train, y_train = torch.as_tensor(x_train), torch.as_tensor(y_train)
    x_test, y_test = torch.as_tensor(x_test), torch.as_tensor(y_test)

    def evaluate(model) -> dict[str, float]:
        model.eval()
        correct = 0
        with torch.inference_mode():
            for i in range(0, len(x_test), eval_batch):
                correct += int((model(x_test[i : i + eval_batch]).argmax(1) == y_test[i : i + eval_batch]).sum())
        return {"accuracy": correct / len(x_test)}

    def example_inputs(batch_size: int) -> tuple:
        idx = torch.arange(batch_size) % len(x_test)
        return (x_test[idx],)

    def calibration(n: int) -> list[tuple]:
        return [(b[0],) for b, _ in zip(_endless((x_train,), 32, seed=1), range(n), strict=False)]

    return Adapter(
        example_inputs=example_inputs,
        evaluate=evaluate,
        train_batches=lambda bs: _endless((x_train, y_train), bs),
        calibration_batches=calibration,
        input_names=["x"],
    )


def seq2seq_wrapper(model):
    """nn.Module: forward(input_ids, decoder_input_ids) -> logits, for an HF encoder-decoder."""
    import torch.nn as nn

    class Seq2SeqLogitsModule(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, decoder_input_ids):
            return self.inner(input_ids=input_ids, decoder_input_ids=decoder_input_ids,
                              use_cache=False).logits

    return Seq2SeqLogitsModule(model).eval()


def seq2seq_adapter(train_pairs, test_pairs, tokenizer_encode, tokenizer_decode,
                    max_new_tokens: int = 32, pad_id: int = 0, decoder_start_id: int = 0) -> Adapter:
    """An adapter for an HF encoder-decoder (T5): BLEU (sacrebleu) of greedy decodes on
    `test_pairs` [(source, target)], teacher-forced cross-entropy on `train_pairs`.
    `tokenizer_encode(text) -> list[int]` (ending in EOS), `tokenizer_decode(ids) -> str`."""
    import torch

    def pad(seqs: list[list[int]]):
        width = max(len(s) for s in seqs)
        return torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs])

    src_test = [tokenizer_encode(s) for s, _ in test_pairs]
    tgt_tr = [tokenizer_encode(t) for _, t in train_pairs]
    src_tr = [tokenizer_encode(s) for s, _ in train_pairs]

    def evaluate(model) -> dict[str, float]:
        import sacrebleu

        model.eval()
        hyps = []
        with torch.inference_mode():
            for i in range(0, len(src_test), 128):
                ids = pad(src_test[i : i + 128])
                out = model.generate(input_ids=ids, attention_mask=(ids != pad_id).long(),
                                     max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
                hyps += [tokenizer_decode(o.tolist()) for o in out]
        refs = [t for _, t in test_pairs]
        bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
        exact = sum(h.strip() == r.strip() for h, r in zip(hyps, refs, strict=True)) / len(refs)
        return {"bleu": bleu, "exact_match": exact}

    def example_inputs(batch_size: int) -> tuple:
        idx = [i % len(src_test) for i in range(batch_size)]
        ids = pad([src_test[i] for i in idx])
        dec = torch.full((batch_size, 1), decoder_start_id)
        tgt = pad([tokenizer_encode(test_pairs[i][1]) for i in idx])
        return ids, torch.cat([dec, tgt[:, :-1]], dim=1)

    def train_batches(batch_size: int) -> Iterator[tuple]:
        g = torch.Generator().manual_seed(0)
        while True:
            order = torch.randperm(len(src_tr), generator=g).tolist()
            for i in range(0, len(order) - batch_size + 1, batch_size):
                idx = order[i : i + batch_size]
                ids, labels = pad([src_tr[j] for j in idx]), pad([tgt_tr[j] for j in idx])
                yield ids, labels.masked_fill(labels == pad_id, -100)

    def loss(model, batch):
        ids, labels = batch
        return model(input_ids=ids, attention_mask=(ids != pad_id).long(), labels=labels).loss

    def calibration(n: int) -> list[tuple]:
        return [example_inputs(16) for _ in range(n)]

    return Adapter(example_inputs=example_inputs, evaluate=evaluate, train_batches=train_batches,
                   loss=loss, calibration_batches=calibration, wrap=seq2seq_wrapper,
                   input_names=["input_ids", "decoder_input_ids"])


def mnist_adapter(config: dict[str, Any]) -> Adapter:
    """Built-in adapter for jobs/mnist_mlp.py: its own data and split, accuracy on its test set."""
    import torch

    from jobs import mnist_mlp

    data = mnist_mlp.DataArgs.model_validate(config.get("data", {}))
    xtr, ytr, xte, yte = mnist_mlp.load_mnist(data)
    return classifier_adapter(torch.from_numpy(xtr), torch.from_numpy(ytr),
                              torch.from_numpy(xte), torch.from_numpy(yte))


def _image_inputs_adapter(config: dict[str, Any]) -> Adapter:
    """jobs/resnet_images.py until it grows hooks: random normalized images of the trained
    size, for latency and export only (no metric, fine-tuning or calibration without hooks)."""
    import torch

    size = int((config.get("data") or {}).get("image_size") or 224)
    g = torch.Generator().manual_seed(0)
    return Adapter(example_inputs=lambda bs: (torch.randn(bs, 3, size, size, generator=g),),
                   input_names=["images"])


def _t5_inputs_adapter(config: dict[str, Any], model=None) -> Adapter:
    """jobs/t5_translation.py until it grows hooks: random token ids (source 24, target 16),
    forward through (input_ids, decoder_input_ids) -> logits; no metric without hooks."""
    import torch

    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 256)
    g = torch.Generator().manual_seed(0)

    def example_inputs(bs: int) -> tuple:
        return (torch.randint(3, vocab, (bs, 24), generator=g),
                torch.randint(3, vocab, (bs, 16), generator=g))

    return Adapter(example_inputs=example_inputs, wrap=seq2seq_wrapper,
                   input_names=["input_ids", "decoder_input_ids"])


BUILTIN_ADAPTERS: dict[str, Callable[..., Adapter]] = {
    "mnist_mlp": lambda config, model=None: mnist_adapter(config),
    "resnet_images": lambda config, model=None: _image_inputs_adapter(config),
    "t5_translation": _t5_inputs_adapter,
}
HOOKS = ("example_inputs", "compress_eval", "train_batches", "compress_loss",
         "calibration_batches", "compress_wrap")


def adapter_for_workload(workload: str, module, config: dict[str, Any], model=None) -> Adapter:
    """Workload hooks win; the built-in adapter (mnist_mlp: everything; resnet_images and
    t5_translation: example inputs only) fills what the workload lacks."""
    base = BUILTIN_ADAPTERS[workload](config, model) if workload in BUILTIN_ADAPTERS else None
    hooks = {h: getattr(module, h, None) for h in HOOKS}
    if hooks["example_inputs"] is None and base is None:
        raise CompressError(
            f"workload '{workload}' defines no example_inputs(config, batch_size): compress needs "
            "it for latency and export. Add it to the workload module (see docs/compression.md)"
        )

    ad = Adapter(
        example_inputs=(lambda bs: tuple(hooks["example_inputs"](config, bs)))
        if hooks["example_inputs"] else base.example_inputs,
        evaluate=(lambda m: dict(hooks["compress_eval"](m, config)))
        if hooks["compress_eval"] else (base.evaluate if base else None),
        train_batches=(lambda bs: iter(hooks["train_batches"](config, bs)))
        if hooks["train_batches"] else (base.train_batches if base else None),
        loss=hooks["compress_loss"] or (base.loss if base else None),
        calibration_batches=(lambda n: list(hooks["calibration_batches"](config, n)))
        if hooks["calibration_batches"] else (base.calibration_batches if base else None),
        wrap=hooks["compress_wrap"] or (base.wrap if base else None),
        input_names=getattr(module, "EXPORT_INPUT_NAMES", None) or (base.input_names if base else None),
    )
    return ad


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class StageRow:
    stage: str
    params: int
    nonzero: int
    size_bytes: int
    gzip_bytes: int
    latency_b1_ms: float | None
    latency_b64_ms: float | None
    metrics: dict[str, float]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _tensors(value) -> Iterator[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)


def count_params(model) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting int8 weights and biases held in packed
    quantized modules as parameters too (they are not nn.Parameters any more)."""
    import torch

    total = nonzero = 0
    param_ids = set()
    for p in model.parameters():
        param_ids.add(id(p))
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    for key, value in model.state_dict(keep_vars=True).items():
        # int8 modules keep weight/bias as plain (quantized) tensors or in packed params
        if "_packed_params" not in key and not key.endswith(("weight", "bias")):
            continue
        for t in _tensors(value):
            if id(t) in param_ids:
                continue
            total += t.numel()
            nonzero += int(torch.count_nonzero(t.dequantize() if t.is_quantized else t.detach()))
    return total, nonzero


def serialized_bytes(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def state_dict_size(model) -> tuple[int, int]:
    """(bytes torch.save writes for the state_dict, those bytes zlib-compressed): the second
    shows what zeros from pruning save with a generic compressor."""
    blob = serialized_bytes(model.state_dict())
    return len(blob), len(zlib.compress(blob, 1))


def linear_weight_bytes(model) -> int:
    """Bytes torch.save writes for the weights of every Linear (float or int8-quantized)."""
    import torch.nn as nn

    weights = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            weights[name] = m.weight.detach()
        elif _is_quantized_linear(m):
            weights[name] = m.weight()
    return len(serialized_bytes(weights)) if weights else 0


def _is_quantized_linear(m) -> bool:
    mod = type(m).__module__
    return type(m).__name__ == "Linear" and mod.startswith("torch.ao.nn.quantized") and callable(
        getattr(m, "weight", None))


def latency_ms(module, inputs: tuple, repeats: int, warmup: int = 2) -> float:
    """Median wall time of one forward pass, in ms, over `repeats` timed calls."""
    import torch

    module.eval()
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            module(*inputs)
        for _ in range(repeats):
            t0 = time.perf_counter()
            module(*inputs)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(stage: str, model, adapter: Adapter, repeats: int, notes: list[str] | None = None,
            seconds: float = 0.0) -> StageRow:
    params, nonzero = count_params(model)
    size, gz = state_dict_size(model)
    wrapped = adapter.module(model)
    notes = list(notes or [])
    lat: dict[int, float | None] = {}
    for bs in (1, 64):
        try:
            lat[bs] = latency_ms(wrapped, adapter.example_inputs(bs), repeats)
        except Exception as exc:  # noqa: BLE001 - a model that cannot run is named, not hidden
            lat[bs] = None
            notes.append(f"latency at batch {bs} failed: {exc}")
    metrics = {}
    if adapter.evaluate is not None:
        metrics = {k: float(v) for k, v in adapter.evaluate(model).items()}
    return StageRow(stage, params, nonzero, size, gz, lat[1], lat[64], metrics, seconds, notes)


# ---------------------------------------------------------------------------------------------
# Module selection


def _selected(name: str, layers: list[str], exclude: list[str]) -> bool:
    if layers and not any(fnmatch.fnmatchcase(name, p) for p in layers):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in exclude)


def leaf_param_modules(model) -> list[tuple[str, Any]]:
    """Modules that own parameters directly (not through children)."""
    out = []
    for name, m in model.named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            out.append((name, m))
    return out


def left_as_is(model, handled: tuple[type, ...], skip: set[int] = frozenset(),
               label: str = "left as is") -> list[str]:
    """Name each layer type with parameters that a stage does not handle, with its count."""
    counts: Counter[str] = Counter()
    for _name, m in leaf_param_modules(model):
        if isinstance(m, handled) or id(m) in skip:
            continue
        counts[type(m).__name__] += 1
    if not counts:
        return []
    listed = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
    return [f"{label} (this stage does not handle them): {listed}"]


def _set_module(model, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _tied_weights(model) -> set[int]:
    """ids of modules whose weight is shared with another module (e.g. T5's lm_head/shared)."""
    owners: dict[int, list[Any]] = {}
    for _n, m in model.named_modules(remove_duplicate=False):
        w = m._parameters.get("weight")  # its own parameter, not a property (LowRankLinear)
        if w is not None:
            owners.setdefault(w.data_ptr(), []).append(m)
    tied = set()
    for mods in owners.values():
        if len({id(m) for m in mods}) > 1:
            tied.update(id(m) for m in mods)
    return tied


# ---------------------------------------------------------------------------------------------
# Low-rank factorization


def is_low_rank(m) -> bool:
    from orchestrator.compress_layers import LowRankLinear

    return isinstance(m, LowRankLinear)


def choose_rank(singular_values, ratio: float | None = None, energy: float | None = None) -> int:
    """Rank for a matrix with these singular values: a fraction of full rank, or the smallest
    rank whose squared singular values keep `energy` of the total."""
    import torch

    full = len(singular_values)
    if ratio is not None:
        return max(1, min(full, int(round(ratio * full))))
    assert energy is not None
    s2 = singular_values.double() ** 2
    kept = torch.cumsum(s2, 0) / s2.sum().clamp_min(1e-30)
    return max(1, min(full, int(torch.searchsorted(kept, torch.tensor(energy - 1e-12, dtype=kept.dtype))) + 1))


def factorize_linear(linear, rank: int):
    """Two Linears whose product is the rank-`rank` truncated SVD of `linear` (sqrt(S) on each)."""
    import torch
    import torch.nn as nn

    w = linear.weight.detach().float()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    first = nn.Linear(linear.in_features, rank, bias=False)
    second = nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root[None, :])
        if linear.bias is not None:
            second.bias.copy_(linear.bias.detach())
    from orchestrator.compress_layers import LowRankLinear

    dtype = linear.weight.dtype
    return LowRankLinear(first.to(dtype), second.to(dtype))


def low_rank(model, ratio: float | None = None, energy: float | None = None,
             layers: list[str] = (), exclude: list[str] = ()) -> list[str]:
    """Replace each chosen nn.Linear, in place, by two smaller Linears; returns notes."""
    import torch
    import torch.nn as nn

    notes: list[str] = []
    tied = _tied_weights(model)
    replaced = kept = 0
    skipped_tied: list[str] = []
    targets = [(n, m) for n, m in model.named_modules()
               if type(m) is nn.Linear and _selected(n, list(layers), list(exclude))]
    for name, lin in targets:
        if id(lin) in tied:
            skipped_tied.append(name)
            continue
        with torch.no_grad():
            s = torch.linalg.svdvals(lin.weight.detach().float())
        r = choose_rank(s, ratio, energy)
        if r * (lin.in_features + lin.out_features) >= lin.in_features * lin.out_features:
            kept += 1
            continue
        _set_module(model, name, factorize_linear(lin, r))
        replaced += 1
        notes.append(f"{name}: {lin.in_features}x{lin.out_features} -> rank {r}")
    how = f"rank ratio {ratio}" if ratio is not None else f"kept energy {energy}"
    notes.insert(0, f"{replaced} Linear(s) factorized ({how})")
    if kept:
        notes.append(f"{kept} Linear(s) kept whole: at that rank two factors would not be smaller")
    if skipped_tied:
        notes.append(f"left as is, weight tied to another module: {', '.join(skipped_tied)}")
    notes += left_as_is(model, (nn.Linear,))
    return notes


# ---------------------------------------------------------------------------------------------
# Pruning


def _prunable_types():
    import torch.nn as nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _output_layer(model):
    """The last Linear/Conv registered: the model's output layer in the usual layouts."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, _prunable_types()):
            last = (name, m)
    return last


def prune_model(model, amount: float, structured: bool = False, layers: list[str] = (),
                exclude: list[str] = ()) -> tuple[list[str], list[tuple[Any, str]]]:
    """Prune in place and make it permanent (no masks or hooks remain).

    Unstructured: global L1 magnitude over every chosen Linear/Conv weight together.
    Structured: per layer, the `amount` of output neurons/channels with the smallest L1 norm
    are zeroed (weights and bias) and, where a Sequential chain lets us, removed for real.
    Returns (notes, [(module, param_name)] that were pruned: fine-tuning keeps their zeros).
    """
    import torch.nn.utils.prune as prune

    notes: list[str] = []
    tied = _tied_weights(model)
    chosen = [(n, m) for n, m in model.named_modules()
              if isinstance(m, _prunable_types()) and _selected(n, list(layers), list(exclude))]
    tied_names = [n for n, m in chosen if id(m) in tied]
    chosen = [(n, m) for n, m in chosen if id(m) not in tied]
    if tied_names:
        notes.append(f"left as is, weight tied to another module: {', '.join(tied_names)}")
    if not chosen:
        raise CompressError("prune: no Linear/Conv layer matched compress.layers/exclude")
    pruned: list[tuple[Any, str]] = []
    if not structured:
        params = [(m, "weight") for _n, m in chosen]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
        for m, p in params:
            prune.remove(m, p)
        pruned = params
        notes.append(f"global L1 unstructured, {amount:.0%} of the weights of {len(chosen)} layers")
    else:
        out = _output_layer(model)
        if out is not None and any(m is out[1] for _n, m in chosen):
            chosen = [(n, m) for n, m in chosen if m is not out[1]]
            notes.append(f"kept {out[0]} whole: it is the output layer (its neurons are the outputs)")
        for _n, m in chosen:
            prune.ln_structured(m, "weight", amount=amount, n=1, dim=0)
            keep = m.weight_mask.flatten(1).any(1)
            prune.remove(m, "weight")
            pruned.append((m, "weight"))
            if m.bias is not None:
                prune.custom_from_mask(m, "bias", keep.to(m.bias.dtype))
                prune.remove(m, "bias")
                pruned.append((m, "bias"))
        notes.append(f"structured L1, {amount:.0%} of the output neurons/channels of {len(chosen)} layers")
        _removed, remarks = compact_sequential_chains(model)
        notes += remarks
        # compaction built new Linears; fine-tuning masks whatever holds zeros among them all
        pruned = _modules_params(model)
    notes += left_as_is(model, _prunable_types())
    return notes, pruned


def _modules_params(model) -> list[tuple[Any, str]]:
    out = []
    for m in model.modules():
        if isinstance(m, _prunable_types()):
            out.append((m, "weight"))
            if m.bias is not None:
                out.append((m, "bias"))
    return out


_ZERO_PRESERVING = ("ReLU", "ReLU6", "GELU", "SiLU", "Tanh", "LeakyReLU", "ELU", "Hardswish",
                    "Hardtanh", "Mish", "Dropout", "Identity", "Softsign", "Tanhshrink")


def _ends(block):
    """(first Linear, last Linear) of a Linear or a LowRankLinear, else None."""
    import torch.nn as nn

    if type(block) is nn.Linear:
        return block, block
    if is_low_rank(block):
        return block[0], block[1]
    return None


def compact_sequential_chains(model) -> tuple[int, list[str]]:
    """Remove all-zero neurons between Linears of an nn.Sequential for real.

    Inside a Sequential, Linear A -> (ReLU/GELU/Dropout/... with f(0) = 0) -> Linear B: a
    neuron of A whose weights and bias are all zero outputs 0, so dropping A's row and B's
    matching column computes the same function with fewer parameters.
    Returns (neurons removed, notes); layers outside such chains keep their zeroed rows.
    """
    import torch
    import torch.nn as nn

    removed = 0
    notes = []
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or is_low_rank(seq):
            continue
        children = list(seq.children())
        i = 0
        while i < len(children):
            ends_a = _ends(children[i])
            if ends_a is None:
                i += 1
                continue
            j = i + 1
            while j < len(children) and type(children[j]).__name__ in _ZERO_PRESERVING:
                j += 1
            ends_b = _ends(children[j]) if j < len(children) else None
            if ends_b is None:
                i = j
                continue
            a, b = ends_a[1], ends_b[0]
            rows = a.weight.detach().abs().sum(1) != 0
            if a.bias is not None:
                rows |= a.bias.detach() != 0
            n_drop = int((~rows).sum())
            if 0 < n_drop < len(rows):
                keep = rows.nonzero().flatten()
                new_a = nn.Linear(a.in_features, len(keep), bias=a.bias is not None)
                new_b = nn.Linear(len(keep), b.out_features, bias=b.bias is not None)
                with torch.no_grad():
                    new_a.weight.copy_(a.weight[keep])
                    if a.bias is not None:
                        new_a.bias.copy_(a.bias[keep])
                    new_b.weight.copy_(b.weight[:, keep])
                    if b.bias is not None:
                        new_b.bias.copy_(b.bias)
                _replace_end(children, i, a, new_a)
                _replace_end(children, j, b, new_b)
                removed += n_drop
                where = f"{seq_name}." if seq_name else ""
                notes.append(f"{where}{i}: removed {n_drop} of {len(rows)} neurons (and the "
                             f"matching inputs of {where}{j})")
            i = j
        for k, child in enumerate(children):
            seq[k] = child
    if not notes:
        notes.append("zeroed neurons/channels stay in place (no Linear -> Linear chain to shrink)")
    return removed, notes


def _replace_end(children: list, idx: int, old, new) -> None:
    block = children[idx]
    if block is old:
        children[idx] = new
        return
    # a LowRankLinear: swap the factor in place, keep its bookkeeping right
    for k in (0, 1):
        if block[k] is old:
            block[k] = new
    block.in_features, block.out_features = block[0].in_features, block[1].out_features
    block.rank = block[0].out_features


# ---------------------------------------------------------------------------------------------
# Fine-tuning


def finetune(model, adapter: Adapter, steps: int, lr: float, batch_size: int,
             keep_zero: list[tuple[Any, str]]) -> list[str]:
    """Train `steps` steps with Adam; every pruned weight that is zero stays zero (a mask from
    the zero pattern while training, made permanent afterwards)."""
    import torch
    import torch.nn.utils.prune as prune

    if adapter.train_batches is None:
        return ["skipped: this workload gives no training data (define train_batches(config, "
                "batch_size) in the workload module)"]
    masked = []
    for m, name in keep_zero:
        p = getattr(m, name, None)
        if p is None or not isinstance(p, torch.nn.Parameter):
            continue
        zero = p.detach() == 0
        if zero.any():
            prune.custom_from_mask(m, name, (~zero).to(p.dtype))
            masked.append((m, name))
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    batches = adapter.train_batches(batch_size)
    first = last = None
    for _ in range(steps):
        batch = next(batches)
        loss = adapter.compute_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    for m, name in masked:
        prune.remove(m, name)
    model.eval()
    return [f"{steps} steps, Adam lr {lr}, batch {batch_size}: loss {first:.4f} -> {last:.4f}"
            + (f"; {len(masked)} pruned tensors kept their zeros" if masked else "")]


# ---------------------------------------------------------------------------------------------
# Quantization


def quantization_api() -> str:
    return "torch.ao.quantization (PyTorch's eager dynamic + FX graph mode static)"


@contextlib.contextmanager
def _quiet_quant():
    # torch 2.14 marks torch.ao.quantization deprecated in favour of torchao (not installed here);
    # it still works and is PyTorch's own API, so its warnings stay out of the report.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def _dynamic_types():
    import torch.nn as nn

    return (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell)


def quantize_dynamic_int8(model, layers: list[str] = (), exclude: list[str] = ()):
    """Dynamic int8 (weights int8, activations quantized on the fly) of Linear/LSTM/GRU."""
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    names = {n: default_dynamic_qconfig for n, m in model.named_modules()
             if type(m) in _dynamic_types() and _selected(n, list(layers), list(exclude))}
    if not names:
        return model, ["dynamic int8: no Linear/LSTM/GRU layer to quantize"] + left_as_is(
            model, _dynamic_types())
    before = linear_weight_bytes(model)
    counts = Counter(type(model.get_submodule(n)).__name__ for n in names)
    skip_ids = {id(m) for n, m in model.named_modules() if n in names}
    left = left_as_is(model, _dynamic_types(), skip=skip_ids)
    with _quiet_quant():
        q = quantize_dynamic(model, qconfig_spec=names, dtype=torch.qint8)
    after = linear_weight_bytes(q)
    notes = [f"dynamic int8 ({torch.backends.quantized.engine} engine) of "
             + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))]
    if before and after:
        notes.append(f"Linear weights {before / 1e6:.3f} MB -> {after / 1e6:.3f} MB "
                     f"({before / after:.2f}x smaller)")
    tied = _tied_weights(model)
    shared = [n for n in names if id(model.get_submodule(n)) in tied]
    if shared:
        notes.append(f"{', '.join(shared)}: weight tied to another module (e.g. an embedding); "
                     "quantized as an int8 copy while the float original stays, so both count")
    unselected = [n for n, m in model.named_modules() if type(m) in _dynamic_types() and n not in names]
    if unselected:
        notes.append(f"excluded by layers/exclude: {', '.join(unselected)}")
    return q, notes + left


def quantize_static_int8(model, adapter: Adapter, num_batches: int):
    """Static int8 through FX graph mode: observe activations on calibration batches, then
    convert (conv/linear/bn fused; ops without int8 kernels stay float between dequant/quant)."""
    import torch
    import torch.nn as nn
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = torch.backends.quantized.engine
    wrapped = adapter.module(model)
    with _quiet_quant():
        prepared = prepare_fx(copy.deepcopy(wrapped).eval(), get_default_qconfig_mapping(engine),
                              adapter.example_inputs(2))
        batches = adapter.calibration_batches(num_batches)
        with torch.inference_mode():
            for inputs in batches:
                prepared(*inputs)
        q = convert_fx(prepared)
    before = Counter(type(m).__name__ for _n, m in leaf_param_modules(wrapped))
    after = Counter(type(m).__name__ for _n, m in q.named_modules()
                    if type(m).__module__.startswith(("torch.ao.nn.quantized",
                                                      "torch.ao.nn.intrinsic.quantized"))
                    and type(m).__name__ != "LinearPackedParams")
    notes = [f"static int8 (FX graph mode, {engine} engine, {len(batches)} calibration batches): "
             + ", ".join(f"{k} x{v}" for k, v in sorted(after.items()))]
    float_left = Counter(type(m).__name__ for _n, m in leaf_param_modules(q)
                         if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding, nn.LayerNorm)))
    if float_left:
        notes.append("left float: " + ", ".join(f"{k} x{v}" for k, v in sorted(float_left.items())))
    notes.append("float layers before: " + ", ".join(f"{k} x{v}" for k, v in sorted(before.items())))
    return q, notes


def quantize_int8(model, adapter: Adapter, mode: str, calibration_batches: int,
                  layers: list[str] = (), exclude: list[str] = ()) -> tuple[Any, list[str], str]:
    """Returns (quantized model, notes, mode used). A static result is already wrapped
    (a GraphModule over adapter.module(model)); the adapter is told so by the caller."""
    import torch.nn as nn

    has_conv = any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())
    notes: list[str] = []
    want_static = mode == "static" or (mode == "auto" and has_conv)
    if want_static and adapter.calibration_batches is None:
        msg = ("static int8 needs a calibration set: the workload gives none (define "
               "calibration_batches(config, num_batches))")
        if mode == "static":
            raise CompressError(msg)
        notes.append(msg + "; using dynamic int8, so conv layers stay float")
        want_static = False
    if want_static:
        if layers or exclude:
            notes.append("static int8 quantizes the whole graph: compress.layers/exclude ignored")
        try:
            q, more = quantize_static_int8(model, adapter, calibration_batches)
            return q, notes + more, "static"
        except Exception as exc:  # noqa: BLE001 - FX cannot trace every model; say so, go on
            if mode == "static":
                raise CompressError(f"static int8 failed (FX graph mode could not trace or "
                                    f"convert this model): {str(exc).splitlines()[0]}") from exc
            notes.append(f"static int8 not possible (FX: {str(exc).splitlines()[0][:200]}); "
                         "using dynamic int8")
    q, more = quantize_dynamic_int8(model, layers, exclude)
    return q, notes + more, "dynamic"


# ---------------------------------------------------------------------------------------------
# Export


def _dynamic_axes(names: list[str], example: tuple) -> dict[str, dict[int, str]]:
    """Batch is dynamic for every input; so is the length of token-id inputs (int, 2-D)."""
    axes: dict[str, dict[int, str]] = {"output": {0: "batch"}}
    for i, (n, t) in enumerate(zip(names, example, strict=True)):
        axes[n] = {0: "batch"}
        if t.dim() == 2 and not t.is_floating_point():
            axes[n][1] = f"seq_{i}"
            axes["output"][1] = "seq_out"  # e.g. logits per decoder position
    return axes


def export_onnx(module, example: tuple, check: tuple, path: Path, input_names: list[str] | None,
                atol: float) -> dict[str, Any]:
    """torch.onnx.export (TorchScript-based exporter, then the dynamo one if that fails), with
    every input's batch dimension dynamic; then run onnxruntime on `check` inputs (another batch
    size than the traced one) and compare with PyTorch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    names = input_names or [f"input_{i}" for i in range(len(example))]
    module.eval()
    used = "torchscript-based"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, example, str(path), dynamo=False, input_names=names,
                              output_names=["output"], dynamic_axes=_dynamic_axes(names, example))
        except Exception as first:  # noqa: BLE001
            used = "dynamo"
            try:
                batch = torch.export.Dim("batch")
                torch.onnx.export(module, example, str(path), dynamo=True, input_names=names,
                                  output_names=["output"],
                                  dynamic_shapes=tuple({0: batch} for _ in example))
            except Exception as second:  # noqa: BLE001
                raise CompressError(f"ONNX export failed: {first}; dynamo exporter: {second}") from second
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), check, strict=True)}
    got = sess.run(None, feeds)[0]
    with torch.inference_mode():
        want = module(*check).numpy()
    diff = float(np.abs(got - want).max())
    return {"format": "onnx", "path": str(path), "exporter": used, "size_bytes": path.stat().st_size,
            "checked_against": f"onnxruntime {ort.__version__}", "batch_checked": int(check[0].shape[0]),
            "max_abs_diff": diff, "atol": atol, "ok": diff <= atol}


def onnx_int8(float_path: Path, path: Path, module, check: tuple) -> dict[str, Any]:
    """onnxruntime's own dynamic int8 of the float ONNX graph (torch.onnx cannot export
    PyTorch's quantized operators); compared with the float PyTorch model."""
    import logging

    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice is not for this report
    try:
        quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), check, strict=True)}
    got = sess.run(None, feeds)[0]
    with torch.inference_mode():
        want = module(*check).numpy()
    return {"format": "onnx-int8", "path": str(path), "size_bytes": path.stat().st_size,
            "checked_against": f"onnxruntime {ort.__version__} (int8) vs PyTorch float",
            "max_abs_diff": float(np.abs(got - want).max()), "ok": True,
            "note": "int8 ONNX: agreement is approximate by design"}


def export_torchscript(module, example: tuple, check: tuple, path: Path) -> dict[str, Any]:
    import torch

    module.eval()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
        diff = float((loaded(*check) - module(*check)).abs().max())
    return {"format": "torchscript", "path": str(path), "size_bytes": path.stat().st_size,
            "checked_against": "eager PyTorch", "batch_checked": int(check[0].shape[0]),
            "max_abs_diff": diff, "ok": diff <= 1e-4}


# ---------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class CompressResult:
    rows: list[StageRow]
    exports: list[dict[str, Any]]
    out_dir: str
    model: Any = None
    float_model: Any = None
    quantize_mode: str | None = None
    api: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [asdict(r) for r in self.rows], "exports": self.exports,
                "out_dir": self.out_dir, "quantize_mode": self.quantize_mode,
                "quantization_api": self.api}

    def row(self, stage: str) -> StageRow:
        return next(r for r in self.rows if r.stage == stage)


def compress_model(model, adapter: Adapter, spec: CompressSpec, out_dir: str | Path | None = None,
                   log: Callable[[str], None] | None = None) -> CompressResult:
    """Run the stages of `spec` on `model` (a copy; the original is untouched), measuring after
    each. Writes model.pt, report.json, report.md and exports to `out_dir` when given."""
    import torch

    log = log or (lambda _m: None)
    model = copy.deepcopy(model).eval()
    reps = spec.latency_repeats
    rows = [measure("original", model, adapter, reps)]
    if adapter.evaluate is None:
        rows[0].notes.append("no task metric: the workload defines no compress_eval(model, config)")
    log(_row_line(rows[-1]))
    layers, exclude = spec.layers, spec.exclude

    if spec.wants_low_rank:
        t0 = time.perf_counter()
        notes = low_rank(model, spec.low_rank, spec.low_rank_energy, layers, exclude)
        rows.append(measure("low-rank", model, adapter, reps, notes, time.perf_counter() - t0))
        log(_row_line(rows[-1]))

    pruned: list[tuple[Any, str]] = []
    if spec.prune is not None:
        t0 = time.perf_counter()
        notes, pruned = prune_model(model, spec.prune, spec.structured, layers, exclude)
        rows.append(measure("prune" + (" (structured)" if spec.structured else ""), model,
                            adapter, reps, notes, time.perf_counter() - t0))
        log(_row_line(rows[-1]))

    if spec.finetune_steps:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        notes = finetune(model, adapter, spec.finetune_steps, spec.finetune_lr,
                         spec.finetune_batch_size, pruned)
        rows.append(measure("fine-tune", model, adapter, reps, notes, time.perf_counter() - t0))
        log(_row_line(rows[-1]))

    float_model = model
    mode = None
    if spec.quantize == "int8":
        t0 = time.perf_counter()
        q, notes, mode = quantize_int8(copy.deepcopy(model), adapter, spec.quantize_mode,
                                       spec.calibration_batches, layers, exclude)
        if mode == "static":
            # the GraphModule already takes the adapter's positional inputs
            qadapter = Adapter(**{**adapter.__dict__, "wrap": None})
            if adapter.wrap is not None:
                qadapter.evaluate = None
                notes.append("task metric not measured: the static int8 graph has only the "
                             "wrapped forward, not the model's own API")
            rows.append(measure(f"int8 {mode}", q, qadapter, reps, notes, time.perf_counter() - t0))
        else:
            rows.append(measure(f"int8 {mode}", q, adapter, reps, notes, time.perf_counter() - t0))
        log(_row_line(rows[-1]))
        model = q

    result = CompressResult(rows, [], str(out_dir or ""), model, float_model, mode, quantization_api())
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model, out / "model.pt")
        result.exports = export_all(model, float_model, adapter, spec, out, static=mode == "static")
        for e in result.exports:
            log(f"export {e['format']}: {e['path']} ({e['size_bytes'] / 1e6:.3f} MB), max |diff| "
                f"vs PyTorch {e['max_abs_diff']:.2e}" + ("" if e["ok"] else "  [FAILED the check]"))
        (out / "report.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
        (out / "report.md").write_text(markdown_table(rows) + "\n\n" + notes_text(rows) + "\n")
    return result


def export_all(model, float_model, adapter: Adapter, spec: CompressSpec, out: Path,
               static: bool = False) -> list[dict[str, Any]]:
    exports: list[dict[str, Any]] = []
    example, check = adapter.example_inputs(2), adapter.example_inputs(3)
    final_module = model if static else adapter.module(model)
    float_module = adapter.module(float_model)
    for fmt in spec.export:
        if fmt == "onnx":
            info = export_onnx(float_module, example, check, out / "model.onnx",
                               adapter.input_names, spec.onnx_atol)
            if model is not float_model:
                info["note"] = ("the float model of the last float stage: torch.onnx cannot "
                                "export PyTorch's int8 operators")
            exports.append(info)
            if model is not float_model and not static:
                exports.append(onnx_int8(out / "model.onnx", out / "model.int8.onnx",
                                         float_module, check))
        elif fmt == "torchscript":
            exports.append(export_torchscript(final_module, example, check,
                                              out / "model.torchscript.pt"))
    return exports


# ---------------------------------------------------------------------------------------------
# Report formatting


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f}"


def _metric_text(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items()) if m else "-"


def _ms(v: float | None) -> str:
    return f"{v:.3f}" if v is not None else "-"


TABLE_HEAD = ["stage", "params", "non-zero", "size MB", "gzip MB", "ms b1", "ms b64", "metric"]


def table_rows(rows: list[StageRow]) -> list[list[str]]:
    return [[r.stage, f"{r.params:,}", f"{r.nonzero:,}", _mb(r.size_bytes), _mb(r.gzip_bytes),
             _ms(r.latency_b1_ms), _ms(r.latency_b64_ms), _metric_text(r.metrics)] for r in rows]


def markdown_table(rows: list[StageRow]) -> str:
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    return "\n".join(lines)


def notes_text(rows: list[StageRow]) -> str:
    out = []
    for r in rows:
        for n in r.notes:
            out.append(f"- {r.stage}: {n}")
    return "\n".join(out)


def _row_line(r: StageRow) -> str:
    return (f"{r.stage:<22} params {r.params:>11,}  non-zero {r.nonzero:>11,}  "
            f"{_mb(r.size_bytes)} MB  b1 {_ms(r.latency_b1_ms)} ms  b64 {_ms(r.latency_b64_ms)} ms"
            f"  {_metric_text(r.metrics)}")


def print_report(result: CompressResult, console=None, title: str = "compression") -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=title)
    for h in TABLE_HEAD:
        table.add_column(h, justify="left" if h in ("stage", "metric") else "right")
    for cells in table_rows(result.rows):
        table.add_row(*cells)
    console.print(table)
    for line in notes_text(result.rows).splitlines():
        console.print(line, highlight=False, markup=False)
    for e in result.exports:
        status = "ok" if e["ok"] else "FAILED"
        console.print(f"export {e['format']}: {e['path']}  {_mb(e['size_bytes'])} MB  max |diff| "
                      f"{e['max_abs_diff']:.2e} vs {e['checked_against']}  [{status}]",
                      highlight=False, markup=False)
    console.print(f"quantization API: {result.api}", highlight=False, markup=False)


# ---------------------------------------------------------------------------------------------
# Checkpoints and the ledger


@dataclass
class Loaded:
    model: Any
    config: dict[str, Any]
    workload: str
    module: Any
    checkpoint_dir: Path
    run_dir: Path


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or the latest complete one of a run directory."""
    from orchestrator.strategy import COMPLETE_MARKER

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or run directory")
    if (p / "model.pt").exists():
        if not (p / COMPLETE_MARKER).exists():
            raise CheckpointError(f"checkpoint {p} is incomplete (no {COMPLETE_MARKER})")
        return p
    candidates = sorted((c for c in p.glob("checkpoint_*") if (c / COMPLETE_MARKER).exists()),
                        key=lambda c: c.name)
    if not candidates:
        raise CheckpointError(f"{p}: expected a checkpoint_NNNNNN/ directory (with model.pt and "
                              f"{COMPLETE_MARKER}) or a run directory holding one; found none")
    return candidates[-1]


def load_checkpoint(path: str | Path, workload: str | None = None) -> Loaded:
    """Rebuild the model through its workload (build_model(Args(config["train"]))) and load
    the checkpoint's weights."""
    import torch
    import yaml

    from orchestrator.spec import import_workload

    ckpt = find_checkpoint(path)
    run_dir = ckpt.parent
    config_file = ckpt / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    spec_file = run_dir / "spec.resolved.yaml"
    spec_data = yaml.safe_load(spec_file.read_text()) if spec_file.exists() else {}
    name = workload or config.get("workload") or (spec_data or {}).get("workload")
    if not name:
        raise CheckpointError(
            f"{ckpt}: cannot tell which workload made it (no 'workload' in config.json and no "
            f"{spec_file.name} beside it); pass --workload NAME")
    if not config.get("train") and spec_data:
        config = {**config, "train": spec_data.get("train", {}), "data": spec_data.get("data", {})}
    try:
        mod = import_workload(name)
    except ModuleNotFoundError as exc:
        raise CheckpointError(f"{ckpt}: workload '{name}' not found ({exc})") from None
    state = torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)
    model = _rebuild(mod, name, config, ckpt, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt}: weights do not fit workload '{name}' built from its "
                              f"config: {str(exc).splitlines()[0]}") from None
    return Loaded(model.eval(), config, name, mod, ckpt, run_dir)


def _rebuild(mod, name: str, config: dict[str, Any], ckpt: Path, state: dict):
    """An untrained model of the checkpoint's shape. A workload's `compress_build(config,
    checkpoint_dir)` hook wins; T5 checkpoints record their T5Config in state.json; a
    build_model(args, num_classes) gets the out-features of the state's last 2-D weight."""
    import inspect

    hook = getattr(mod, "compress_build", None)
    if hook is not None:
        return hook(config, ckpt)
    saved = json.loads((ckpt / "state.json").read_text()) if (ckpt / "state.json").exists() else {}
    if saved.get("t5_config") and hasattr(mod, "model_from_config"):
        return mod.model_from_config(saved["t5_config"])
    args_cls = getattr(mod, "Args", None)
    args = args_cls.model_validate(config.get("train", {})) if args_cls else config.get("train", {})
    if getattr(args, "weights", None):
        args = args.model_copy(update={"weights": None})  # the checkpoint has the weights
    params = list(inspect.signature(mod.build_model).parameters)
    if len(params) == 2 and params[1] == "num_classes":
        mats = [v for v in state.values() if getattr(v, "dim", lambda: 0)() == 2]
        if not mats:
            raise CheckpointError(f"{ckpt}: cannot tell num_classes for {name}.build_model")
        return mod.build_model(args, mats[-1].shape[0])
    if len(params) != 1:
        raise CheckpointError(f"{ckpt}: {name}.build_model{inspect.signature(mod.build_model)} "
                              "needs more than Args; add compress_build(config, checkpoint_dir)")
    return mod.build_model(args)


def source_run_id(run_dir: Path) -> str:
    """The ledger run_id of the run that wrote `run_dir`, or the run dir's name if unrecorded."""
    from orchestrator import ledger

    try:
        rows = ledger.latest_by_run(run_dir.parent)
    except Exception:  # noqa: BLE001 - an unreadable ledger must not block compression
        rows = []
    matches = [r for r in rows if Path(r["run_dir"] or "").resolve() == run_dir.resolve()
               or r["run_name"] == run_dir.name]
    return matches[-1]["run_id"] if matches else run_dir.name


def _headline(rows: list[StageRow]) -> dict[str, Any]:
    first, last = rows[0], rows[-1]
    out: dict[str, Any] = {
        "params": last.params, "nonzero": last.nonzero, "size_bytes": last.size_bytes,
        "latency_b1_ms": last.latency_b1_ms, "latency_b64_ms": last.latency_b64_ms,
        "size_ratio": first.size_bytes / max(1, last.size_bytes),
        "nonzero_ratio": first.nonzero / max(1, last.nonzero),
    }
    for k, v in last.metrics.items():
        out[k] = v
    for k, v in first.metrics.items():
        out[f"original_{k}"] = v
    return out


def record_ledger(storage_path: Path, result: CompressResult, *, parent_run: str, run_name: str,
                  workload: str, checkpoint: str, spec: CompressSpec, status: str = "SUCCEEDED",
                  error: str = "", started: float | None = None) -> tuple[str, list[str]]:
    """One kind=compress row (parent: the source run) and one kind=export row per export
    (parent: the compress row). Returns (compress run_id, export run_ids)."""
    from orchestrator import ledger

    cid = f"{run_name}.compress-{uuid.uuid4().hex[:8]}"
    ledger.record(storage_path, run_id=cid, run_name=f"{run_name}.compressed", workload=workload,
                  status=status, start_time=started, end_time=time.time(),
                  metrics=_headline(result.rows) if result.rows else {}, run_dir=result.out_dir,
                  latest_checkpoint=str(Path(result.out_dir) / "model.pt") if result.out_dir else "",
                  error=error, parent_run=parent_run, kind="compress",
                  extra={"source_checkpoint": checkpoint, "spec": spec.model_dump(mode="json"),
                         **result.to_dict()})
    eids = []
    for e in result.exports:
        eid = f"{run_name}.export-{e['format']}-{uuid.uuid4().hex[:8]}"
        ledger.record(storage_path, run_id=eid, run_name=f"{run_name}.{e['format']}",
                      workload=workload, status="SUCCEEDED" if e["ok"] else "FAILED",
                      end_time=time.time(), metrics={"max_abs_diff": e["max_abs_diff"],
                                                     "size_bytes": e["size_bytes"]},
                      run_dir=result.out_dir, latest_checkpoint=e["path"], parent_run=cid,
                      kind="export", error="" if e["ok"] else "outputs differ from PyTorch",
                      extra=e)
        eids.append(eid)
    return cid, eids


def compress_checkpoint(path: str | Path, spec: CompressSpec, workload: str | None = None,
                        parent_run: str | None = None, log: Callable[[str], None] | None = None,
                        adapter: Adapter | None = None) -> tuple[CompressResult, str]:
    """Load a checkpoint (or a run dir's latest), compress it, write the output folder and the
    ledger rows. Returns (result, compress run_id)."""
    loaded = load_checkpoint(path, workload)
    adapter = adapter or adapter_for_workload(loaded.workload, loaded.module, loaded.config,
                                              loaded.model)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(spec.out) if spec.out else loaded.run_dir / f"compress_{stamp}"
    parent = parent_run or source_run_id(loaded.run_dir)
    storage = loaded.run_dir.parent
    started = time.time()
    try:
        result = compress_model(loaded.model, adapter, spec, out, log)
    except Exception as exc:
        failed = CompressResult([], [], str(out))
        record_ledger(storage, failed, parent_run=parent, run_name=loaded.run_dir.name,
                      workload=loaded.workload, checkpoint=str(loaded.checkpoint_dir), spec=spec,
                      status="FAILED", error=f"{type(exc).__name__}: {exc}"[:2000], started=started)
        raise
    cid, _ = record_ledger(storage, result, parent_run=parent, run_name=loaded.run_dir.name,
                           workload=loaded.workload, checkpoint=str(loaded.checkpoint_dir),
                           spec=spec, started=started)
    return result, cid


def run_after_training(spec, summary: dict[str, Any], console=None) -> dict[str, Any] | None:
    """Called by `orch run` after a successful run whose spec has a `compress:` section.
    Returns a small summary (out_dir, compress run_id, final metrics), {"error": ...} when
    compression failed (the training run stays SUCCEEDED; the ledger gets a FAILED compress
    row), or None when there is nothing to do."""
    if not getattr(spec, "compress", None) or summary.get("status") != "SUCCEEDED":
        return None
    cspec = parse_spec(spec.compress)
    source = summary.get("checkpoint") or summary.get("run_dir")
    if not source:
        raise CompressError("compress: the run left no checkpoint to compress")
    say = (lambda m: console.print(m, highlight=False, markup=False)) if console else None
    if console:
        console.print(f"[bold]compress[/bold] {source}")
    try:
        result, cid = compress_checkpoint(source, cspec, workload=spec.workload,
                                          parent_run=summary.get("run_id"), log=say)
    except Exception as exc:  # noqa: BLE001 - training succeeded; its result must still stand
        error = f"{type(exc).__name__}: {exc}"
        if console:
            console.print(f"[red]compress failed[/red]: {error}", highlight=False)
        return {"error": error[:2000]}
    if console:
        print_report(result, console, title=f"compress {summary.get('run_name', '')}")
    return {"out_dir": result.out_dir, "run_id": cid, "metrics": _headline(result.rows)}
