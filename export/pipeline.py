"""One export: load, re-sign, stage, verify, commit a version, write configs, prune."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from export import SAVEDMODEL_DIRNAME, ensemble, fidelity, model_config, repository
from export.signature import Interface, resign
from export.sources import HUB_TIMEOUT_S, load_source


@dataclass
class ExportResult:
    source: str
    model: str
    version: int
    path: Path
    interface: Interface
    max_abs_diff: float
    configs: list[Path]
    pruned: list[int] = field(default_factory=list)
    seconds: float = 0.0
    openvino: dict | None = None  # the IR's provenance record (export/openvino.py), None if skipped


def export_model(source: str, repo: Path, model: str, *, seed: int = 0, keep: int | None = None,
                 hub_timeout: float = HUB_TIMEOUT_S, tolerance: float = fidelity.TOLERANCE,
                 progress: Callable[[str], None] | None = None, openvino: bool = True) -> ExportResult:
    """Write the next version of `model` under `repo` from `source`; nothing numbered on failure.

    With `openvino` the version also holds the OpenVINO IR, checked against TensorFlow first.
    """
    import tensorflow as tf

    say = progress or (lambda _msg: None)
    start = time.monotonic()
    repo = Path(repo)
    for stale in repository.clean_stale_staging(repo, model):
        say(f"removed {stale.name}, left by an export that did not finish")
    loaded = load_source(source, seed=seed, hub_timeout=hub_timeout, progress=say)
    staging = None
    try:
        say("re-signing: images -> embedding")
        module, iface = resign(loaded.obj)
        staging = repository.new_staging_dir(repo, model)
        saved = staging / SAVEDMODEL_DIRNAME
        say(f"saving SavedModel (input {list(iface.input_dims)}, output {list(iface.output_dims)})")
        tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
        say("checking fidelity: reloaded model vs source on a fixed batch")
        diff = fidelity.max_abs_difference(module, saved, iface)
        say(f"max abs difference {diff:.3g} (tolerance {tolerance:g})")
        fidelity.check(diff, tolerance)
        ov_record = None
        if openvino:  # export/openvino.py: IR + parity, still in staging
            from export import openvino as ov_path

            def reference(x):  # noqa: ANN001, ANN202 - the module proven identical to the SavedModel
                return module.serve(tf.constant(x))[iface.output_name].numpy()

            ov_record = ov_path.add_to_staging(staging, iface, say, tensorflow=reference)
        version = repository.commit_version(staging, repo, model)
        staging = None
        say(f"committed version {version}")
        configs = model_config.write_configs(repo, model, iface, openvino=openvino)
        # Compact transport: the <model>_uint8 ensemble (uint8 pixels in), see export/ensemble.py.
        configs += ensemble.write_ensemble(repo, model)
        pruned = repository.prune(repo, model, keep) if keep else []
        if pruned:
            say(f"removed old versions {pruned}")
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        loaded.cleanup()
    return ExportResult(loaded.description, model, version,
                        repository.model_dir(repo, model) / str(version), iface, diff, configs,
                        pruned, time.monotonic() - start, ov_record)
