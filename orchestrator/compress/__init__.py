"""Compress a trained model: factorize, prune, fine-tune, quantize, export; report every stage.

    orch compress runs/mnist-mlp --prune 0.9 --finetune-steps 300          # latest checkpoint
    orch compress runs/mnist-mlp/checkpoint_000465 --quantize int8 --export onnx
    orch compress runs/mnist-mlp --prune 0.5 --structured --finetune-steps 300
    orch compress runs/mnist-mlp --low-rank 0.5 --finetune-steps 200 --export pt2
    orch compress runs/resnet --prune 0.5 --quantize int8    # static int8 with a calibration set

or as a `compress:` section of a job spec, run after a successful `orch run`:

    compress: {prune: 0.9, finetune_steps: 300, quantize: int8, export: [onnx]}

The package, in the order a compression runs (docs/compression.md is the user's manual):

    spec.py        CompressSpec (the `compress:` section and the CLI flags), parse_spec,
                   CompressError
    checkpoint.py  load_checkpoint: a checkpoint (or a run dir's newest complete one) rebuilt
                   through its workload
    adapters.py    Adapter (how to feed, score and train a model), the built-in adapters, the
                   workload hooks (adapter_for_workload)
    measure.py     StageRow and measure: parameters, non-zero, size, CPU latency, task metric
    selection.py   which modules a stage touches (--layers/--exclude globs, tied weights) and
                   the "left as is" notes
    layers.py      LowRankLinear and ExportedInt8 (a static int8 torch.export program as a
                   module), the modules compress puts into models (imports torch)
    lowrank.py     low-rank factorization (truncated SVD of each chosen Linear)
    prune.py       unstructured and structured pruning, Sequential chain compaction
    finetune.py    fine-tuning that keeps pruned zeros at zero
    quantize.py    int8 through torchao: dynamic (Linear) or static (PT2E, x86 quantizer,
                   calibration)
    export.py      ONNX (torch.onnx dynamo, checked against onnxruntime) and torch.export
                   (model.pt2, reloaded and checked against eager)
    report.py      CompressResult, the stage table (rich, markdown) and print_report
    records.py     the ledger rows: run -> compressed model (kind=compress) -> export
    pipeline.py    compress_model (the stages in order), compress_checkpoint (load, compress,
                   record), run_after_training (the spec's `compress:` section after `orch run`)

Every module but layers.py imports torch, onnx and the rest inside its functions: the command
line imports spec, pipeline and report at startup.
"""
