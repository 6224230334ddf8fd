# glacierscale CUDA worker image: one Dask worker per GPU (dask-cuda), bf16/fp16 inference.
# Build from the repository root:  docker build -f docker/cuda.Dockerfile -t glacierscale-cuda:0.1.0 .
# The CUDA runtime libraries come with the torch wheel (nvidia-* wheels), so the runtime stage only
# needs the driver interface of the CUDA base image. Python is a relocatable uv-managed build, so the
# same interpreter runs in the builder and the runtime stage.

FROM ghcr.io/astral-sh/uv:0.9.5 AS uv

FROM nvidia/cuda:12.8.1-base-ubuntu24.04 AS builder

COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    VIRTUAL_ENV=/opt/venv
RUN uv python install 3.11.7 && \
    uv venv --python 3.11.7 "$VIRTUAL_ENV"
ENV PATH="$VIRTUAL_ENV/bin:$PATH"

# torch first and alone, from the CUDA 12.8 index, then the package with its gpu extra.
RUN uv pip install --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY flows ./flows
RUN uv pip install ".[gpu,k8s]" && \
    cp -r flows "$VIRTUAL_ENV/flows"

FROM nvidia/cuda:12.8.1-base-ubuntu24.04 AS runtime

LABEL org.opencontainers.image.title="glacierscale-cuda" \
      org.opencontainers.image.description="glacierscale Dask GPU workers (dask-cuda)" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    GLACIERSCALE_CACHE=/home/glacier/.cache/glacierscale

RUN groupadd --gid 10001 glacier && \
    useradd --uid 10001 --gid glacier --create-home --shell /usr/sbin/nologin glacier

COPY --from=builder /opt/python /opt/python
COPY --from=builder /opt/venv /opt/venv
WORKDIR /opt/glacierscale
COPY --from=builder --chown=glacier:glacier /opt/venv/flows ./flows

USER 10001:10001
EXPOSE 8788
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import glacierscale, dask_cuda, torch"]
# GPU workers resources: GPU=<tiles at once per GPU>; see glacierscale.cluster.
CMD ["dask", "cuda", "worker", "tcp://dask-scheduler:8786", "--resources", "GPU=2"]
