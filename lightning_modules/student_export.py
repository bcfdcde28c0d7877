"""The student's export (paper eq. 6 merges it) and its provenance record.

`export_student` writes the trainable weights of a `DistillStudent` as safetensors with a
JSON record (`suite.policies.exports`) that says which run made them and when: the MLflow
run id, its experiment and the global step, beside the hyper-parameters that matter for
merging (beta, gamma, temperature, seed, KL kind) and the hash of the base model. A merge
recipe compares the record, never the file name, so an export is never silently stale:
a run restored at its last step exports again (`suite.run`), and an export of another
MLflow experiment is refused before a run could overwrite it (`suite.preflight`).
"""

from __future__ import annotations

import logging
from typing import Any

from lightning_modules import tracking
from suite.policies.exports import save_export

log = logging.getLogger("lightning_modules.student")


def export_record(module: Any, path: str) -> dict[str, Any]:
    """The provenance record of the student's export to `path`."""
    hp = module.hparams
    return {
        "kind": "student",
        "name": path.rsplit("/", 1)[-1].removesuffix(".safetensors"),
        "policy": {"name": hp.policy["name"], "architecture": module.policy.architecture()},
        "base_hash": module.base_hash,
        "base": hp.policy,
        "beta": float(hp.beta),
        "beta_scale": float(hp.beta_scale),
        "gamma": float(hp.gamma),
        "negative_prompt": hp.negative_prompt,
        "temperature": float(hp.temperature),
        "kl_kind": hp.kl_kind,
        "seed": int(hp.eval_seed),
        "step": int(module.global_step),
        "mlflow_run_id": tracking.run_id(module),
        "mlflow_experiment": tracking.experiment_name(module),
    }


def export_student(module: Any, path: str) -> None:
    """Write the trainable weights and their record, and log both to the MLflow run."""
    # Every rank: under FSDP gathering the full weights is a collective (rank 0 gets them).
    full = module.trainer.strategy.lightning_module_state_dict()
    if not module.trainer.is_global_zero:
        return
    state = {k.removeprefix("student."): v for k, v in full.items() if k.startswith("student.")}
    save_export(state, path, export_record(module, path))
    uris = tracking.log_export(module, path)
    log.info("exported the student (step %d) to %s%s", int(module.global_step), path,
             f" ({uris[0]})" if uris else "")  # fmt: skip
