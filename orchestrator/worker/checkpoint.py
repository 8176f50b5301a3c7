"""Checkpoints of a training run: written by every rank, reported to Ray, restored on resume.

    sess.save_checkpoint(step, {"loss": ..})     # -> save(sess, ...)
    state = sess.restore()                       # -> restore(sess): {"step": ..} or None

A checkpoint is a directory `checkpoint_NNNNNN/` holding `state.json` (step, counters,
metrics), `config.json` (the WorkerConfig) and, written last by rank 0, `_COMPLETE`, which
lists every rank's files (orchestrator/rundir.py decides what is complete). Beside them, by
format:

    torch      model.pt + optimizer.pt, written by rank 0 (DDP: every rank holds everything)
    dcp        dcp/ (torch.distributed.checkpoint: each rank writes its own shard file,
               rank 0 the .metadata) + trainer.pt (LR schedule, loss scaler)       [FSDP]
    deepspeed  deepspeed/<tag>/ (a DeepSpeed engine checkpoint: each rank writes its ZeRO
               shards; rank 0 the module states)
    pipeline   pipeline/stage_K.pt per stage (its chunks' weights, optimizer, LR schedule),
               written by that stage's rank in the first replica                  [pipeline]

Under Ray every rank reports its own directory to ray.train.report and Ray merges them into
one checkpoint directory, so sharded strategies never gather the full state on one rank.
Alone (no Ray), the ranks copy their directories into the run directory themselves. Every
function takes the worker's Session (orchestrator/worker/session.py) as `sess`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from orchestrator import rundir
from orchestrator.errors import CheckpointError


def checkpoint_format(sess) -> str:
    if sess.engine is not None:
        return "deepspeed"
    if getattr(sess, "pipeline", None) is not None:
        return "pipeline"
    return "dcp" if sess.fsdp else "torch"


def save(
    sess,
    step: int,
    metrics: dict[str, Any],
    state: dict | None = None,
    final: bool = False,
    row: bool = True,
) -> None:
    """Write a checkpoint of model, optimizer, schedule and `state`, and report it.

    Every worker must call this (it is a collective under DDP/FSDP/DeepSpeed). Each rank
    writes what it holds into its own directory; rank 0 writes the marker last, after every
    rank has written (the sharded writers end in a collective).
    """
    import torch

    metrics = {**plain(metrics), "step": step}
    fmt = checkpoint_format(sess)
    state = {
        **(state or {}),
        "step": step,
        "optimizer_steps": sess.optimizer_steps,
        "micro_step": sess.micro_step,
        "world_size": sess.world_size,
        "strategy": sess.strategy,
        "precision": sess.precision,
        "format": fmt,
        **({"pipeline": _pipeline_shape(sess)} if fmt == "pipeline" else {}),
        "final": final,
        "metrics": metrics,
    }
    name = rundir.checkpoint_name(step)
    if sess.run_dir:
        # A directory of this name is left from before a fallback past a half-written
        # checkpoint (Ray still tracks it and will delete it): never write into it.
        n = 1
        while rundir.exists(rundir.join(sess.run_dir, name)):
            name = f"{rundir.checkpoint_name(step)}_{n}"
            n += 1
    tmp = tempfile.mkdtemp(prefix=f"orch-{name}-r{sess.rank}-")
    try:
        if fmt == "deepspeed":
            # Each rank writes its ZeRO shards under deepspeed/<name>/; rank 0 also the
            # module states. client_state travels with the engine checkpoint too.
            sess.engine.save_checkpoint(
                os.path.join(tmp, "deepspeed"),
                tag=name,
                client_state={"orch_state": state},
                save_latest=False,
            )
        elif fmt == "dcp":
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_sd, optim_sd = get_state_dict(sess.model, sess.optimizer)
            dcp.save(
                {"model": model_sd, "optimizer": optim_sd}, checkpoint_id=os.path.join(tmp, "dcp")
            )
        elif fmt == "pipeline" and sess.data_rank == 0:
            # Each stage of the first replica writes its own chunks (the others hold copies).
            os.makedirs(os.path.join(tmp, "pipeline"), exist_ok=True)
            torch.save(
                {
                    "chunks": sess.pipeline.stage_state(),
                    "optimizer": sess.optimizer.state_dict(),
                    "scheduler": sess.scheduler.state_dict(),
                },
                os.path.join(tmp, "pipeline", f"stage_{sess.pipeline.stage}.pt"),
            )
        if sess.is_main:
            if fmt == "torch":
                torch.save(sess.unwrap().state_dict(), os.path.join(tmp, "model.pt"))
                torch.save(
                    {
                        "optimizer": sess.optimizer.state_dict(),
                        "scheduler": sess.scheduler.state_dict(),
                        "scaler": sess.scaler.state_dict() if sess.scaler else None,
                    },
                    os.path.join(tmp, "optimizer.pt"),
                )
            elif fmt == "dcp":
                torch.save(
                    {
                        "scheduler": sess.scheduler.state_dict(),
                        "scaler": sess.scaler.state_dict() if sess.scaler else None,
                    },
                    os.path.join(tmp, "trainer.pt"),
                )
            _write_json(os.path.join(tmp, "state.json"), state)
            _write_json(os.path.join(tmp, "config.json"), sess.config)
        # A collective: every rank's shards are on disk before rank 0 writes the marker,
        # which lists every rank's files so restore can tell a partial merge.
        files = sess.all_gather_object(_walk(tmp))
        if sess.is_main:
            _write_json(
                os.path.join(tmp, rundir.COMPLETE_MARKER),
                {
                    "step": step,
                    "format": fmt,
                    "world_size": sess.world_size,
                    "files": sorted({f for rank_files in files for f in rank_files}),
                },
            )
        _report(sess, tmp, name, metrics, row=row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _report(sess, directory: str, name: str, metrics: dict, row: bool = True) -> None:
    if row and sess.is_main:
        sess.append_row({**metrics, "checkpoint": name})
        sess.flush_rows()  # a URI run dir's rows up to this checkpoint are written before it
    has_files = any(True for _ in Path(directory).iterdir())
    if sess.in_ray:
        import ray.train

        # Every rank with files reports them; Ray merges the directories into one.
        ckpt = ray.train.Checkpoint.from_directory(directory) if has_files else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)
    elif sess.run_dir and rundir.is_uri(sess.run_dir):
        # One process (a sweep trial in its own process): upload, the marker last.
        dest = rundir.join(sess.run_dir, name)
        marker = Path(directory) / rundir.COMPLETE_MARKER
        body = marker.read_bytes() if marker.exists() else None
        marker.unlink(missing_ok=True)
        if has_files and any(True for _ in Path(directory).iterdir()):
            rundir.upload_dir(directory, dest)
        if body is not None:
            rundir.write_bytes(rundir.join(dest, rundir.COMPLETE_MARKER), body)
    elif sess.run_dir:
        dest = str(Path(sess.run_dir) / name)
        if sess.is_main and Path(dest).exists():
            shutil.rmtree(dest)
        sess.barrier()
        marker = Path(directory) / rundir.COMPLETE_MARKER
        if has_files:
            shutil.copytree(
                directory,
                dest,
                dirs_exist_ok=True,
                ignore=lambda d, names: [rundir.COMPLETE_MARKER] if d == directory else [],
            )
        sess.barrier()
        if marker.exists():
            shutil.copy2(marker, Path(dest) / rundir.COMPLETE_MARKER)
    if sess.reporter is not None and sess.run_dir and sess.is_main:
        sess.reporter(metrics, dest if has_files else None)


# -- restoring -------------------------------------------------------------------------------


def _offered(sess):
    """A context manager yielding where the checkpoint to resume from is (a local path or,
    in a URI run dir, the checkpoint's URI), or None: Ray's (the run's latest, after a
    restart or a rerun), else config.resume_from."""
    if sess.in_ray:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is not None:
            newer = _newer_in_storage(sess, rundir.basename(ckpt.path))
            if newer is not None:
                return contextlib.nullcontext(newer)
            if sess.run_dir and rundir.is_uri(sess.run_dir):
                # Checked and read where it is stored: Ray's own download would not show a
                # half-uploaded checkpoint's neighbours to fall back to.
                return contextlib.nullcontext(rundir.join(sess.run_dir, rundir.basename(ckpt.path)))
            return ckpt.as_directory()
    return contextlib.nullcontext(sess.config.get("resume_from") or None)


def _newer_in_storage(sess, offered_name: str) -> str | None:
    """A complete checkpoint in the run directory newer than the one Ray offers, or None.

    Ray's controller registers a checkpoint only when it next polls the worker that reported
    it; a node lost after the upload finished but before that poll leaves Ray offering the
    checkpoint before. The run directory is the record: what is complete there was written
    by this run. Rank 0 looks and every rank takes its answer, so all load the same one.
    """
    found = None
    if sess.is_main and sess.run_dir:
        try:
            newest = rundir.latest_complete(sess.run_dir)
        except Exception:  # noqa: BLE001 - storage unreadable now: Ray's choice stands
            newest = None
        if newest is not None and rundir.basename(newest) > offered_name:
            found = newest
            print(
                f"[orch] Ray offered {offered_name}; resuming from the newer complete "
                f"{rundir.basename(newest)} in the run directory",
                flush=True,
            )
    return sess.all_gather_object(found)[0]


def _newest_complete(sess, d: str) -> str:
    """`d` if it is complete, else the newest complete checkpoint before it in its run dir.

    A crash while a checkpoint was written (or uploaded) leaves a directory without
    `_COMPLETE`, or without some file it lists; Ray may still hand it out as the latest, so
    resume falls back rather than failing.
    """
    if rundir.is_complete(d):
        return d
    chosen = rundir.latest_complete(rundir.parent(d), before=rundir.basename(d))
    if chosen is None:
        raise CheckpointError(
            f"checkpoint {d} is incomplete (no {rundir.COMPLETE_MARKER} or missing files) and "
            f"no older complete checkpoint is in {rundir.parent(d)}; start fresh "
            "(orch run SPEC --fresh)"
        )
    if sess.is_main:
        print(
            f"[orch] {rundir.basename(d)} is incomplete (half-written?); falling back to "
            f"{rundir.basename(chosen)}",
            flush=True,
        )
    return chosen


def restore(sess) -> dict | None:
    """Load model/optimizer/schedule from the checkpoint to resume from; its state or None."""
    with _offered(sess) as offered:
        if offered is None:
            # Starting from step 0 (also after a worker-group restart that came before any
            # checkpoint was registered): rows of an earlier attempt would repeat steps.
            sess.truncate_rows(0)
            sess.record_attempt(None)
            return None
        where = _newest_complete(sess, str(offered))
        missing = rundir.missing_files(where)
        if missing:
            raise CheckpointError(f"checkpoint {where} is missing {', '.join(missing[:5])}")
        d = rundir.local_copy(where)  # itself when local; a download from a bucket
        state = json.loads((d / "state.json").read_text())
        fmt = state.get("format", "torch")
        if fmt != checkpoint_format(sess):
            raise CheckpointError(
                f"checkpoint {d} was written by strategy {state.get('strategy')} "
                f"({fmt} format); this run uses {sess.strategy} ({checkpoint_format(sess)}). "
                "Resume with the same strategy, or start fresh (orch run SPEC --fresh)."
            )
        try:
            if fmt == "deepspeed":
                _load_deepspeed(sess, d, state)
            elif fmt == "pipeline":
                _load_pipeline(sess, d, state)
            elif fmt == "dcp":
                _load_dcp(sess, d)
            else:
                _load_torch(sess, d)
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint {d} does not fit this model: {str(exc).splitlines()[0]}"
            ) from None
        sess.optimizer_steps = state.get("optimizer_steps", 0)
        sess.micro_step = state.get("micro_step", 0)
        sess.restored_state = state
        sess.truncate_rows(int(state.get("step", 0)))
        sess.mark_logged(state.get("step", 0))
        what = f"{rundir.basename(where)} ({fmt})"
        # `orch run`'s driver prints the line from the attempt record: a worker's stdout
        # reaches it through Ray's log monitor, which may print it late, or after the driver
        # has exited. A sweep's trial (no driver reads its attempts) and a run with no run id
        # print it here.
        recorded = sess.record_attempt(int(state.get("step", 0)), what)
        if sess.is_main and (not recorded or sess.config.get("report_metrics_to_ray")):
            print(
                f"[orch] resumed from {rundir.basename(where)} at step {state.get('step')} ({fmt})",
                flush=True,
            )
        return state


def _load_torch(sess, d: Path) -> None:
    import torch

    model_state = torch.load(d / "model.pt", map_location=sess.device, weights_only=True)
    sess.unwrap().load_state_dict(model_state)
    opt = torch.load(d / "optimizer.pt", map_location=sess.device, weights_only=False)
    sess.optimizer.load_state_dict(opt["optimizer"])
    sess.scheduler.load_state_dict(opt["scheduler"])
    if sess.scaler is not None and opt.get("scaler"):
        sess.scaler.load_state_dict(opt["scaler"])


def _load_dcp(sess, d: Path) -> None:
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    # Loads into this run's sharding (DCP reshards if the world size changed).
    model_sd, optim_sd = get_state_dict(sess.model, sess.optimizer)
    target = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(target, checkpoint_id=str(d / "dcp"))
    set_state_dict(
        sess.model,
        sess.optimizer,
        model_state_dict=target["model"],
        optim_state_dict=target["optimizer"],
    )
    extra = torch.load(d / "trainer.pt", map_location="cpu", weights_only=False)
    sess.scheduler.load_state_dict(extra["scheduler"])
    if sess.scaler is not None and extra.get("scaler"):
        sess.scaler.load_state_dict(extra["scaler"])


def _pipeline_shape(sess) -> dict[str, Any]:
    p = sess.pipeline
    return {
        "stages": p.layout.stages,
        "chunks": p.n_chunks,
        "replicas": p.layout.replicas,
        "schedule": p.schedule_name,
    }


def _load_pipeline(sess, d: Path, state: dict) -> None:
    import torch

    saved, now = state.get("pipeline") or {}, _pipeline_shape(sess)
    if saved.get("stages") != now["stages"] or saved.get("chunks") != now["chunks"]:
        raise CheckpointError(
            f"checkpoint {d} was written by a {saved.get('stages')}-stage pipeline "
            f"({saved.get('chunks')} chunks, schedule {saved.get('schedule')}); this run has "
            f"pipeline.stages={now['stages']} ({now['chunks']} chunks, schedule "
            f"{now['schedule']}). Resume with pipeline.stages={saved.get('stages')} and the "
            "same schedule kind, or start fresh (orch run SPEC --fresh)."
        )
    got = torch.load(
        d / "pipeline" / f"stage_{sess.pipeline.stage}.pt", map_location="cpu", weights_only=False
    )
    sess.pipeline.load_stage_state(got["chunks"])
    sess.optimizer.load_state_dict(got["optimizer"])
    sess.scheduler.load_state_dict(got["scheduler"])


def _load_deepspeed(sess, d: Path, state: dict) -> None:
    tag = d.name if (d / "deepspeed" / d.name).is_dir() else None
    if tag is None:
        tags = sorted(p.name for p in (d / "deepspeed").glob("checkpoint_*") if p.is_dir())
        if not tags:
            raise CheckpointError(f"checkpoint {d} holds no DeepSpeed engine checkpoint")
        tag = tags[-1]
    saved_world = int(state.get("world_size", sess.world_size))
    if saved_world != sess.world_size:
        raise CheckpointError(
            f"DeepSpeed checkpoint {d} was written by {saved_world} workers, this run has "
            f"{sess.world_size}; resume with resources.workers={saved_world}"
        )
    path, _client = sess.engine.load_checkpoint(
        str(d / "deepspeed"), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None:
        raise CheckpointError(f"DeepSpeed could not load {d / 'deepspeed' / tag}")


# -- helpers ---------------------------------------------------------------------------------


def plain(metrics: dict[str, Any]) -> dict[str, Any]:
    """Tensors and numpy scalars as Python numbers; a metric given as None (not measured
    yet, e.g. accuracy before the first evaluation) is left out, never written as a value."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items() if v is not None}


def _walk(root: str) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return out


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, default=str)
        fh.flush()
        os.fsync(fh.fileno())
