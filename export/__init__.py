"""Turn a hub model (handle, local dir, tarball or offline twin) into a versioned Triton model.

Submodules: `sources` finds and loads the model, `signature` re-signs it with stable tensor names,
`repository` writes versions atomically, `model_config` derives Triton configs from the signature,
`fidelity` proves the written model computes what the source computes, `pipeline` ties them together
and `cli` is the command line.
"""

DEFAULT_SOURCE = "https://tfhub.dev/google/imagenet/pnasnet_large/feature_vector/5"
DEFAULT_MODEL = "pnasnet_large"
INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
SAVEDMODEL_DIRNAME = "model.savedmodel"
