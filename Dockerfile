# syntax=docker/dockerfile:1
# The tei-operator image: `tei-operator run` as a non-root user on a slim Python base.
#
# Two stages: `build` turns the package and its dependencies into wheels and installs them into a virtualenv;
# the final stage copies only that virtualenv, so no compiler, pip cache or source tree ships.
# The base is pinned by exact tag; pin it by digest too (python:3.11.14-slim-bookworm@sha256:...) in your
# registry mirror. Build: docker build -t tei-operator:dev .   (docs/install.md tells how this file is checked
# without a Docker engine.)

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest of the repository out of the context).
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
# The operator's wheel alone (--no-deps), then the wheels of its dependencies resolved from pyproject.toml.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m pip wheel --wheel-dir /wheels /wheels/tei_operator-*.whl
# A virtualenv without pip holding exactly those wheels: the final stage copies it whole.
RUN python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install --no-index --find-links /wheels --no-compile tei-operator \
 && /opt/venv/bin/tei-operator crds > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tei-operator" \
      org.opencontainers.image.description="Kubernetes operator for Hugging Face Text Embeddings Inference" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base image's pip and setuptools are build tools the operator never uses at run time.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel || true
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TEI_OPERATOR_HEALTH_HOST=0.0.0.0
# A numeric non-root user, so runAsNonRoot can verify it (the chart runs it as 65532 too).
USER 65532:65532
WORKDIR /tmp
# 8080: /healthz and /readyz; 8081: the operator's own /metrics
EXPOSE 8080 8081
ENTRYPOINT ["tei-operator"]
CMD ["run"]
