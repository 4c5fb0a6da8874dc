#!/bin/sh
# Roll back a model by retiring one version folder (default: the newest) out of the model directory.
# Triton serves the newest remaining version once its pods restart (version_policy latest 1).
# The folder is moved, not deleted, to <repository>/.retired/<model>/<N>-<UTC time>, which is no
# model directory: to restore it, move it back under its number.
# Environment: MODEL_REPOSITORY (default /models), MODEL_NAME, ROLLBACK_VERSION (a number or "latest").
set -eu

repository="${MODEL_REPOSITORY:-/models}"
model="${MODEL_NAME:?MODEL_NAME must be set}"
wanted="${ROLLBACK_VERSION:-latest}"
model_dir="$repository/$model"

# Version folders exactly as Triton and the export code count them: plain numbers, no leading zero.
list_versions() {
    find "$model_dir" -mindepth 1 -maxdepth 1 -type d -exec basename {} \; \
        | grep -E '^[1-9][0-9]*$' | sort -n || true
}

if [ ! -d "$model_dir" ]; then
    echo "rollback: no model directory $model_dir" >&2
    exit 1
fi
versions="$(list_versions)"
count="$(printf '%s\n' "$versions" | grep -c . || true)"
if [ "$count" -lt 2 ]; then
    echo "rollback: $model_dir has $count version(s); refusing to leave nothing to serve" >&2
    exit 1
fi
if [ "$wanted" = "latest" ]; then
    version="$(printf '%s\n' "$versions" | tail -n 1)"
else
    version="$wanted"
fi
if ! printf '%s\n' "$versions" | grep -qx "$version"; then
    echo "rollback: version '$version' not found in $model_dir (have: $(echo $versions))" >&2
    exit 1
fi

destination="$repository/.retired/$model/$version-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$(dirname "$destination")"
mv "$model_dir/$version" "$destination"
serving="$(list_versions | tail -n 1)"
echo "rollback: retired $model version $version to $destination; newest version now $serving"
