# The project image: the export CLI (`python -m export`, extra "export") and the Locust load test
# (`locust -f loadtest/locustfile.py`, extra "loadtest"). Used by k8s/export, k8s/rollback and
# k8s/loadtest; Triton itself runs from NVIDIA's image.
#   docker build -t <registry>/pnasnet-embeddings:0.1.0 . && docker push <registry>/pnasnet-embeddings:0.1.0
# Pin the base by digest in production (python:3.11-slim-bookworm@sha256:...).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    PYTHONPATH=/app

# uid 10001 (runAsUser in the manifests); gid 1000 is shared with Triton's user on the model volume.
RUN groupadd --system --gid 1000 models \
    && useradd --system --uid 10001 --gid models --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app

WORKDIR /app
COPY pyproject.toml README.md ./
COPY client ./client
COPY export ./export
COPY serve ./serve
COPY loadtest ./loadtest
COPY demo ./demo
# Sample images the load test sends by default (imported from the source tree: PYTHONPATH=/app).
COPY samples ./samples
RUN pip install --no-cache-dir ".[export,onnx,loadtest]"

USER 10001:1000
CMD ["python", "-m", "export", "--help"]
