# glacierscale CPU image: Prefect flows, Dask scheduler and CPU workers.
# Build from the repository root:  docker build -f docker/cpu.Dockerfile -t glacierscale-cpu:0.1.0 .
# Multi-stage: the builder compiles nothing (every dependency ships wheels) but keeps pip caches and
# the source tree out of the runtime image, which runs as an unprivileged user.

FROM python:3.11.7-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv
RUN python -m venv "$VIRTUAL_ENV"
ENV PATH="$VIRTUAL_ENV/bin:$PATH"

# torch first and alone, CPU wheel: installing it with the rest would pull a CUDA build.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /src
# Pinned dependency set first (cached layer), then the package itself without resolving again.
COPY docker/requirements-cpu.lock ./
RUN pip install --no-cache-dir --requirement requirements-cpu.lock
COPY pyproject.toml README.md ./
COPY src ./src
COPY flows ./flows
RUN pip install --no-cache-dir --no-deps . && \
    cp -r flows "$VIRTUAL_ENV/flows"

FROM python:3.11.7-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="glacierscale-cpu" \
      org.opencontainers.image.description="glacierscale flows and Dask CPU workers" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR \
    GLACIERSCALE_CACHE=/home/glacier/.cache/glacierscale

RUN groupadd --gid 10001 glacier && \
    useradd --uid 10001 --gid glacier --create-home --shell /usr/sbin/nologin glacier

COPY --from=builder /opt/venv /opt/venv
# Deployments name flows/global_inventory.py relative to the working directory.
WORKDIR /opt/glacierscale
COPY --from=builder --chown=glacier:glacier /opt/venv/flows ./flows

USER 10001:10001
EXPOSE 4200 8786 8787
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import glacierscale, distributed, prefect"]
CMD ["glacierscale", "--help"]
