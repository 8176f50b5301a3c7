"""Adapters: what compress needs to know about a model's task, and where it gets it.

An `Adapter` says how to feed a model (example inputs, for latency and export), score it (the
task metric), train it (batches and a loss, for fine-tuning), calibrate it (static int8) and
call it positionally (`wrap`, for models whose forward takes keywords).

    classifier_adapter(x_train, y_train, x_test, y_test)        # accuracy, in-memory tensors
    seq2seq_adapter(train_pairs, test_pairs, encode, decode)    # BLEU, an HF encoder-decoder
    adapter_for_workload(name, module, config, model)           # a workload's hooks

A workload module tells compress about its task through optional functions (HOOKS, see
docs/compression.md): `example_inputs(config, batch_size)`, `compress_eval(model, config)`,
`train_batches(config, batch_size)`, `compress_loss(model, batch)`,
`calibration_batches(config, num_batches)`, `compress_wrap(model)`. The built-in adapters
(BUILTIN_ADAPTERS) fill what a workload lacks: everything for jobs/mnist_mlp.py, example inputs
only for resnet_images and t5_translation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from orchestrator.compress.spec import CompressInputError


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
                correct += int(
                    (
                        model(x_test[i : i + eval_batch]).argmax(1) == y_test[i : i + eval_batch]
                    ).sum()
                )
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
            return self.inner(
                input_ids=input_ids, decoder_input_ids=decoder_input_ids, use_cache=False
            ).logits

    return Seq2SeqLogitsModule(model).eval()


def seq2seq_adapter(
    train_pairs,
    test_pairs,
    tokenizer_encode,
    tokenizer_decode,
    max_new_tokens: int = 32,
    pad_id: int = 0,
    decoder_start_id: int = 0,
) -> Adapter:
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
                out = model.generate(
                    input_ids=ids,
                    attention_mask=(ids != pad_id).long(),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                )
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

    return Adapter(
        example_inputs=example_inputs,
        evaluate=evaluate,
        train_batches=train_batches,
        loss=loss,
        calibration_batches=calibration,
        wrap=seq2seq_wrapper,
        input_names=["input_ids", "decoder_input_ids"],
    )


def mnist_adapter(config: dict[str, Any]) -> Adapter:
    """Built-in adapter for jobs/mnist_mlp.py: its own data and split, accuracy on its test set."""
    import torch

    from jobs import mnist_mlp

    data = mnist_mlp.DataArgs.model_validate(config.get("data", {}))
    xtr, ytr, xte, yte = mnist_mlp.load_mnist(data)
    return classifier_adapter(
        torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte)
    )


def _image_inputs_adapter(config: dict[str, Any]) -> Adapter:
    """jobs/resnet_images.py until it grows hooks: random normalized images of the trained
    size, for latency and export only (no metric, fine-tuning or calibration without hooks)."""
    import torch

    size = int((config.get("data") or {}).get("image_size") or 224)
    g = torch.Generator().manual_seed(0)
    return Adapter(
        example_inputs=lambda bs: (torch.randn(bs, 3, size, size, generator=g),),
        input_names=["images"],
    )


def _t5_inputs_adapter(config: dict[str, Any], model=None) -> Adapter:
    """jobs/t5_translation.py until it grows hooks: random token ids (source 24, target 16),
    forward through (input_ids, decoder_input_ids) -> logits; no metric without hooks."""
    import torch

    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 256)
    g = torch.Generator().manual_seed(0)

    def example_inputs(bs: int) -> tuple:
        return (
            torch.randint(3, vocab, (bs, 24), generator=g),
            torch.randint(3, vocab, (bs, 16), generator=g),
        )

    return Adapter(
        example_inputs=example_inputs,
        wrap=seq2seq_wrapper,
        input_names=["input_ids", "decoder_input_ids"],
    )


BUILTIN_ADAPTERS: dict[str, Callable[..., Adapter]] = {
    "mnist_mlp": lambda config, model=None: mnist_adapter(config),
    "resnet_images": lambda config, model=None: _image_inputs_adapter(config),
    "t5_translation": _t5_inputs_adapter,
}
HOOKS = (
    "example_inputs",
    "compress_eval",
    "train_batches",
    "compress_loss",
    "calibration_batches",
    "compress_wrap",
)


def adapter_for_workload(workload: str, module, config: dict[str, Any], model=None) -> Adapter:
    """Workload hooks win; the built-in adapter (mnist_mlp: everything; resnet_images and
    t5_translation: example inputs only) fills what the workload lacks."""
    base = BUILTIN_ADAPTERS[workload](config, model) if workload in BUILTIN_ADAPTERS else None
    hooks = {h: getattr(module, h, None) for h in HOOKS}
    if hooks["example_inputs"] is None and base is None:
        raise CompressInputError(
            f"workload '{workload}' defines no example_inputs(config, batch_size): compress needs "
            "it for latency and export. Add it to the workload module (see docs/compression.md)"
        )

    ad = Adapter(
        example_inputs=(lambda bs: tuple(hooks["example_inputs"](config, bs)))
        if hooks["example_inputs"]
        else base.example_inputs,
        evaluate=(lambda m: dict(hooks["compress_eval"](m, config)))
        if hooks["compress_eval"]
        else (base.evaluate if base else None),
        train_batches=(lambda bs: iter(hooks["train_batches"](config, bs)))
        if hooks["train_batches"]
        else (base.train_batches if base else None),
        loss=hooks["compress_loss"] or (base.loss if base else None),
        calibration_batches=(lambda n: list(hooks["calibration_batches"](config, n)))
        if hooks["calibration_batches"]
        else (base.calibration_batches if base else None),
        wrap=hooks["compress_wrap"] or (base.wrap if base else None),
        input_names=getattr(module, "EXPORT_INPUT_NAMES", None)
        or (base.input_names if base else None),
    )
    return ad
