# syntax=docker/dockerfile:1
# Image of manufacturing (ManufacturingService + OperatorService): batches, QC, two-person release, ISBT 128 units.
# Build from the repository root: docker build -f deploy/docker/manufacturing.Dockerfile -t cellbank-manufacturing .
# Every process of this service at every site runs it; the site comes from the environment
# (CELLBANK_SITE_ID, CELLBANK_FACILITY_ID, CELLBANK_DATABASE_URL, CELLBANK_KAFKA_BOOTSTRAP).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build: the dependencies in a virtualenv, the protobuf code generated from protos/ -------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt deploy/constraints.txt ./
RUN pip install -r requirements.txt -c constraints.txt
COPY protos/ protos/
COPY deploy/__init__.py deploy/protos.py deploy/
RUN python -m deploy.protos

# --- runtime: no compiler, no pip cache, no build context beyond the code it runs ------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH PYTHONPATH=/app:/app/protos
WORKDIR /app
# Numeric user, so Kubernetes' runAsNonRoot can verify it (deploy/k8s runs as the same uid).
RUN groupadd --system --gid 10001 cellbank \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin cellbank
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app/protos/ protos/
COPY shared/ shared/
COPY services/ services/
USER 10001:10001
EXPOSE 50051
CMD ["python", "-m", "services.manufacturing.entrypoints.main"]
