"""Training checkpoints with Orbax `CheckpointManager`: async saves, keep-last-K, exact resume, resharding.

Layout of `{checkpoint_dir}/{step}/` (every step directory is also an stvl-jax *model* checkpoint, so
`stvl_jax.load_model(step_dir)` and `stvl convert export --ckpt step_dir` read it directly):

    stvl_config.json   the model checkpoint header (`stvl_jax.checkpoint_io`): model config, the preprocessing the
                       run trained at, task sections (STRIDE window, fps), param summary
    integrity.json     a checksum per array of params/, opt_state/, train_state/ (`stvl_jax.checkpoint_integrity`)
    params/            all parameters (trainable + frozen), nested dict with string keys, master dtype
    opt_state/         optax state over the trainable parameters, as a nested dict with string keys
    train_state/       {"step": (), "rng": (2,) uint32}
    run/               meta.json (step, train config, process count) and data_process_{i}-of-{n}.json
                       (each process's data-iterator state)

Only string keys are written: optax's tuples/namedtuples are stored under their path strings and rebuilt from
the abstract state on restore (Orbax's integer-key restore pitfall avoided). The RNG is a raw uint32 key.
Restore targets carry the *current* mesh's shardings, so a checkpoint written on one mesh or device count
restores onto another; each device reads only its shards.

Integrity: a save records every array's checksum (computed on device, mesh-independent) and refuses a state
with a NaN/inf parameter or optimizer value; a restore verifies the checksums (`checkpoint.verify`), and
`restore_newest_valid` falls back from a damaged or unreadable checkpoint to the newest one that restores,
moving the damaged ones to `{checkpoint_dir}/damaged/` so that the run can save those steps again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from stvl_jax import checkpoint_integrity as integrity
from stvl_jax.checkpoint_io import CONFIG_FILE, flatten, header, nest
from stvl_jax.errors import CheckpointError
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig
from stvl_jax.nn.params import flat_key
from stvl_jax.train.config import CheckpointConfig
from stvl_jax.train.state import TrainState

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- run-info item (JSON files)
class RunInfoHandler(ocp.CheckpointHandler):
    """Writes meta.json and the model header (primary process) and this process's data-iterator state."""

    def save(self, directory: epath.Path, args: "RunInfoSave"):
        directory = epath.Path(directory)
        i, n = jax.process_index(), jax.process_count()
        if i == 0:
            (directory / "meta.json").write_text(json.dumps(args.meta, indent=1))
            # the step directory (parent) becomes a model checkpoint; it is renamed into place atomically
            (directory.parent / CONFIG_FILE).write_text(json.dumps(args.model_header, indent=1) + "\n")
            if args.integrity is not None:
                integrity.write(directory.parent, args.integrity)
        if args.data_state is not None:
            (directory / f"data_process_{i}-of-{n}.json").write_text(json.dumps(args.data_state))

    def restore(self, directory: epath.Path, args: "RunInfoRestore" = None):
        """-> {'meta', 'data_state'}. With another process count, a data state that every saving process
        shared (a global iterator position) still applies; per-process shard states do not (None)."""
        directory = epath.Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        path = directory / f"data_process_{jax.process_index()}-of-{jax.process_count()}.json"
        if path.exists():
            return {"meta": meta, "data_state": json.loads(path.read_text())}
        states = [json.loads(p.read_text()) for p in sorted(directory.glob("data_process_*-of-*.json"))]
        shared = states[0] if states and all(s == states[0] for s in states) else None
        return {"meta": meta, "data_state": shared}

    def metadata(self, directory):
        return None

    def structure(self, directory):
        return None

    def finalize(self, directory):
        pass

    def close(self):
        pass


@ocp.args.register_with_handler(RunInfoHandler, for_save=True)
@dataclasses.dataclass
class RunInfoSave(ocp.args.CheckpointArgs):
    meta: dict
    model_header: dict
    data_state: dict | None
    integrity: dict | None = None


@ocp.args.register_with_handler(RunInfoHandler, for_restore=True)
@dataclasses.dataclass
class RunInfoRestore(ocp.args.CheckpointArgs):
    pass


# ------------------------------------------------------------------------------- string-key trees
def to_string_tree(tree) -> dict:
    """Any pytree -> nested dict with string keys (leaf paths joined by '/')."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return nest({flat_key(p): leaf for p, leaf in leaves})


def from_string_tree(nested: dict, like):
    """Inverse of `to_string_tree`, with the structure of `like`."""
    flat = flatten(nested)
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    return jax.tree_util.tree_unflatten(treedef, [flat[flat_key(p)] for p, _ in paths])


# ------------------------------------------------------------------------------- manager
ITEMS = ("params", "opt_state", "train_state")
DAMAGED_DIR = "damaged"


def _state_arrays(params: dict, opt_state: dict, train_state: dict) -> dict[str, Any]:
    """{"params/...", "opt_state/...", "train_state/..." : array}: the names integrity.json uses."""
    out = {}
    for item, tree in zip(ITEMS, (params, opt_state, train_state)):
        out.update({f"{item}/{k}": v for k, v in flatten(tree).items()})
    return out


def _everywhere(ok: bool) -> bool:
    """True when `ok` holds on every process (a damaged shard may be seen by one process only)."""
    if jax.process_count() == 1:
        return ok
    from stvl_jax.train.batches import allgather

    return bool(allgather(np.asarray([ok], np.int32)).min())


class TrainCheckpointer:
    def __init__(self, directory: str | Path, cfg: CheckpointConfig):
        d = str(directory)
        # gs:// and other remote paths go to Orbax as they are; local paths are made absolute
        self.directory = epath.Path(d) if "://" in d else epath.Path(Path(d).absolute())
        self.cfg = cfg
        options = ocp.CheckpointManagerOptions(max_to_keep=cfg.keep, enable_async_checkpointing=cfg.async_save,
                                               cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("params", "opt_state", "train_state", "run"))

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, *, config: QwenVLConfig, meta: dict, data_state: dict | None,
             force: bool = False, preprocessing: PreprocessConfig | None = None, sections: dict | None = None
             ) -> bool:
        """Start an (async) save of `state` at its step. Returns False if that step is already saved."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return False
        params = state.all_params()
        trees = nest(params), to_string_tree(state.opt_state), {"step": state.step, "rng": state.rng}
        arrays = _state_arrays(*trees)
        digests, finite = integrity.digests(arrays, check_finite=True)  # one read pass over the state
        bad = integrity.non_finite(finite)
        if bad:
            raise CheckpointError(f"refusing to save step {step} to {str(self.directory)!r}: {len(bad)} array(s) "
                                  f"hold NaN/inf, e.g. {bad[0]!r} (the earlier checkpoints are kept)")
        args = ocp.args.Composite(
            params=ocp.args.PyTreeSave(trees[0]),
            opt_state=ocp.args.PyTreeSave(trees[1]),
            train_state=ocp.args.PyTreeSave(trees[2]),
            run=RunInfoSave(meta={**meta, "step": step, "process_count": jax.process_count()},
                            model_header=header(config.to_dict(), params, {"kind": "stvl-train", "step": step},
                                                preprocessing=(preprocessing or config.default_preprocessing()
                                                               ).to_dict(), sections=sections),
                            data_state=data_state, integrity=integrity.record(arrays, digests)),
        )
        return bool(self.manager.save(step, args=args, force=force))

    def restore(self, step: int | None, abstract: TrainState, shardings: TrainState) -> tuple[TrainState, dict]:
        """Restore `step` (None = latest) onto the current mesh. Returns (state, {'meta', 'data_state'}).
        Every array is checked against the step's integrity.json (`checkpoint.verify`); an unreadable or damaged
        checkpoint raises one CheckpointError line naming the step and the array."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint to resume in {str(self.directory)!r}")
        if step not in self.manager.all_steps():
            raise CheckpointError(f"checkpoint step {step} not in {str(self.directory)!r} "
                                  f"(have {self.all_steps()})")

        def target(tree, sh):
            return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, sh)

        params_t = nest(target({**abstract.params, **abstract.frozen}, {**shardings.params, **shardings.frozen}))
        opt_t = to_string_tree(target(abstract.opt_state, shardings.opt_state))
        ts_t = {"step": target(abstract.step, shardings.step), "rng": target(abstract.rng, shardings.rng)}

        def restore_args(t):
            return ocp.args.PyTreeRestore(item=t, restore_args=ocp.checkpoint_utils.construct_restore_args(t))

        where = f"checkpoint step {step} in {str(self.directory)!r}"
        error = None
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                params=restore_args(params_t), opt_state=restore_args(opt_t), train_state=restore_args(ts_t),
                run=RunInfoRestore()))
        except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many types; one line names the cause
            error = self._restore_error(where, e, (params_t, opt_t, ts_t))
        if not _everywhere(error is None):
            raise error or CheckpointError(f"{where}: another process could not read its part")
        if self.cfg.verify:
            arrays = _state_arrays(out["params"], out["opt_state"], out["train_state"])
            integrity.verify(where, integrity.read(self.directory / str(step)), arrays)
        all_params = flatten(out["params"])
        params, frozen = {k: all_params[k] for k in abstract.params}, {k: all_params[k] for k in abstract.frozen}
        state = TrainState(step=out["train_state"]["step"], params=params, frozen=frozen,
                           opt_state=from_string_tree(out["opt_state"], abstract.opt_state),
                           rng=out["train_state"]["rng"])
        return state, out["run"]

    def _restore_error(self, where: str, e: BaseException, targets) -> CheckpointError:
        text = integrity.error_text(e)
        # a missing, truncated or unreadable file
        if "Error reading" in text or "FileNotFoundError" in text or isinstance(e, FileNotFoundError):
            for item, tree in zip(ITEMS, targets):
                if f"/{item}/" in text or f"/{item}\"" in text:
                    return integrity.read_error(where, e, list(flatten(tree)), prefix=item + "/")
            return integrity.read_error(where, e, [])
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        return CheckpointError(f"{where} does not restore into this model and optimizer (different architecture "
                               f"or trainable groups?): {first}")

    def restore_newest_valid(self, abstract: TrainState, shardings: TrainState,
                             say: Callable[[str], None] = print) -> tuple[TrainState, dict]:
        """`restore` of the newest checkpoint that restores and verifies. Each one skipped is reported by
        `say` in one line and moved to {directory}/damaged/ (so this run can save its step again)."""
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint to resume in {str(self.directory)!r}")
        skipped = []
        for step in steps:
            try:
                restored = self.restore(step, abstract, shardings)
            except CheckpointError as e:
                say(f"skipping {e}")
                skipped.append(step)
                continue
            self._set_aside(skipped, say)
            return restored
        raise CheckpointError(f"no checkpoint in {str(self.directory)!r} restores: steps {steps} are all damaged "
                              f"or incompatible (reasons above)")

    def _set_aside(self, steps: list[int], say: Callable[[str], None]) -> None:
        if not steps:
            return
        if jax.process_index() == 0:
            aside = self.directory / DAMAGED_DIR
            aside.mkdir(exist_ok=True)
            for step in steps:
                dest, n = aside / str(step), 1
                while dest.exists():
                    dest, n = aside / f"{step}.{n}", n + 1
                (self.directory / str(step)).rename(dest)
            say(f"moved the skipped checkpoint(s) {steps} to {str(aside)!r}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("stvl_checkpoint_set_aside")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
