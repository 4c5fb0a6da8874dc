"""The compact transport on the server: a Triton ensemble that takes 8-bit pixels.

A 331x331x3 float32 image is 1.31 MB on the wire; the same pixels as uint8 are 329 KB. Clients
that send uint8 call an ensemble instead of the model:

    <model>_uint8               platform "ensemble": input <images> UINT8 [H, W, 3] -> <embedding>
      step 1  <model>_uint8_to_float   Python backend, numpy only: pixels * (1/255) as float32
      step 2  <model>                  the embedding model itself, unchanged

Step 2 is the model that is already loaded, so the weights are loaded once and the model's
dynamic batcher merges float32 and uint8 traffic alike. The conversion step needs only numpy
(the GPU image's Python backend has numpy, not Pillow), so decoding and resizing stay on the
client, where they are fast (client/preprocess.py).

Both new models get one config per config variant of the model (config.pbtxt for the GPU
deployment, configs/<name>.pbtxt for `--model-config-name=<name>`, cpu for the local server),
read from the model's folder on disk: the ensemble's `max_batch_size` must not exceed the
model's, which differs between variants. A variant without a batcher (`max_batch_size: 0` and a
dynamic first dim, as Triton's OpenVINO backend needs) gets the same shape in both new models, so a
request of any number of images flows through unchanged. A deployment that loads models explicitly must load
`<model>_uint8` and `<model>_uint8_to_float` too.
"""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from export import model_config
from export.repository import model_dir, write_text_atomic

ENSEMBLE_SUFFIX = "_uint8"  # client/embedding_client.py COMPACT_SUFFIX names the same model
STEP_SUFFIX = "_uint8_to_float"
STEP_SOURCE = Path(__file__).with_name("uint8_to_float.py")
STEP_INPUT = "pixels"
INTERNAL_TENSOR = "float_images"
VERSION = "1"
GPU_STEP_INSTANCES = 2  # numpy on CPU beside a GPU model: two instances keep the GPU fed


def ensemble_name(model: str) -> str:
    return f"{model}{ENSEMBLE_SUFFIX}"


def step_name(model: str) -> str:
    return f"{model}{STEP_SUFFIX}"


def model_variants(repo: Path, model: str) -> dict[str, mc.ModelConfig]:
    """The model's configs on disk: relative path -> config (config.pbtxt, configs/*.pbtxt)."""
    root = model_dir(repo, model)
    paths = [root / "config.pbtxt", *sorted((root / "configs").glob("*.pbtxt"))]
    return {str(p.relative_to(root)): model_config.read(p) for p in paths if p.is_file()}


def _uses_gpu(cfg: mc.ModelConfig) -> bool:
    return any(group.kind == mc.ModelInstanceGroup.KIND_GPU for group in cfg.instance_group)


def step_config(model: str, cfg: mc.ModelConfig) -> mc.ModelConfig:
    """Python step: UINT8 pixels -> FP32 input of `model` (same dims), on CPU."""
    (inp,) = cfg.input
    step = mc.ModelConfig(name=step_name(model), backend="python", max_batch_size=cfg.max_batch_size)
    step.input.add(name=STEP_INPUT, data_type=mc.TYPE_UINT8, dims=list(inp.dims))
    step.output.add(name=inp.name, data_type=mc.TYPE_FP32, dims=list(inp.dims))
    count = GPU_STEP_INSTANCES if _uses_gpu(cfg) else 1
    step.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=count)
    step.version_policy.latest.num_versions = 1
    return step


def ensemble_config(model: str, cfg: mc.ModelConfig) -> mc.ModelConfig:
    """Ensemble: UINT8 pixels under the model's input name -> the model's output."""
    (inp,), (out,) = cfg.input, cfg.output
    ens = mc.ModelConfig(name=ensemble_name(model), platform="ensemble",
                         max_batch_size=cfg.max_batch_size)
    ens.input.add(name=inp.name, data_type=mc.TYPE_UINT8, dims=list(inp.dims))
    ens.output.add(name=out.name, data_type=out.data_type, dims=list(out.dims))
    first = ens.ensemble_scheduling.step.add(model_name=step_name(model), model_version=-1)
    first.input_map[STEP_INPUT] = inp.name
    first.output_map[inp.name] = INTERNAL_TENSOR
    second = ens.ensemble_scheduling.step.add(model_name=model, model_version=-1)
    second.input_map[inp.name] = INTERNAL_TENSOR
    second.output_map[out.name] = out.name
    ens.version_policy.latest.num_versions = 1
    return ens


def _supported(cfg: mc.ModelConfig) -> bool:
    """One float32 image input; batched by Triton (dims [H, W, 3]) or, without a batcher
    (max_batch_size 0, e.g. Triton's OpenVINO backend), by a dynamic first dim ([-1, H, W, 3])."""
    if len(cfg.input) != 1 or len(cfg.output) != 1 or cfg.input[0].data_type != mc.TYPE_FP32:
        return False
    dims = list(cfg.input[0].dims)
    if cfg.max_batch_size > 0:
        return len(dims) == 3
    return len(dims) == 4 and dims[0] == -1


def all_configs(repo: Path, model: str) -> dict[str, dict[str, mc.ModelConfig]]:
    """Model name -> {relative config path -> config} for the ensemble and its step."""
    variants = {rel: cfg for rel, cfg in model_variants(repo, model).items() if _supported(cfg)}
    return {
        ensemble_name(model): {rel: ensemble_config(model, cfg) for rel, cfg in variants.items()},
        step_name(model): {rel: step_config(model, cfg) for rel, cfg in variants.items()},
    }


def write_ensemble(repo: Path, model: str) -> list[Path]:
    """Write both models (configs, step code, version folders) beside `model`; returns the files."""
    written: list[Path] = []
    models = all_configs(repo, model)
    if not any(models.values()):
        return written  # no float32 image-model config to chain to
    for name, configs in models.items():
        for rel, cfg in configs.items():
            path = model_dir(repo, name) / rel
            write_text_atomic(path, model_config.to_text(cfg))
            written.append(path)
        version = model_dir(repo, name) / VERSION
        version.mkdir(parents=True, exist_ok=True)  # an ensemble needs a version folder, even empty
    step_code = model_dir(repo, step_name(model)) / VERSION / "model.py"
    write_text_atomic(step_code, STEP_SOURCE.read_text())
    written.append(step_code)
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m export.ensemble --repository R --model M`: (re)write the ensemble of a model."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m export.ensemble", description=main.__doc__)
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--model", default="pnasnet_large")
    args = p.parse_args(argv)
    for path in write_ensemble(args.repository, args.model):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
