# syntax=docker/dockerfile:1
# Image of the operator dashboard (deploy/dashboard.py, on port 8080) and the operator tools:
# `python -m deploy.cli audit verify|log`, `trace`, `replay --site S`, `watch`.
# Build from the repository root: docker build -f deploy/docker/dashboard.Dockerfile -t cellbank-dashboard .
# In a container the dashboard reads the network from the environment: CELLBANK_DELIVERY_ENDPOINTS,
# CELLBANK_KAFKA_BOOTSTRAP, CELLBANK_OIDC_ISSUER and its client, CELLBANK_DASHBOARD_CLIENT_ID and
# CELLBANK_DASHBOARD_CLIENT_SECRET(_FILE) (deploy/dashboard.py); no secret is baked in. The CLI
# in it signs in with `python -m deploy.cli login --issuer URL` (tokens under $HOME or
# $XDG_CONFIG_HOME: give it a writable one).
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
COPY deploy/ deploy/
USER 10001:10001
EXPOSE 8080
CMD ["python", "-m", "deploy.dashboard", "--host", "0.0.0.0", "--port", "8080"]
