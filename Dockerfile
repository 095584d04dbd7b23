# Curvecast server images.
#
#   CPU (default target):  docker build -t curvecast:cpu .
#   GPU (CUDA base):       docker build --target gpu -t curvecast:gpu .
#
# Both run `curvecast-server` with the bundled learned model as an unprivileged user (uid 10001) and
# need no writable root filesystem (run with --read-only; mount a tmpfs on /tmp if you like). The
# runtime dependencies are installed from constraints/serve.txt (and constraints/gpu.txt for the GPU
# image), the pinned sets the tests ran against (`make lock` regenerates them).
# Ports: 50051 gRPC, 9464 Prometheus /metrics. Configuration: CURVECAST_* environment variables (see
# `curvecast-server --help`). The CPU image starts one server process per core of the container's CPU
# limit (CURVECAST_WORKERS, docs/workers.md); the GPU image one (one CUDA session per container).
#
# onnxruntime is pinned here (ORT_CPU / ORT_GPU, the same versions as in constraints/, which the
# image build filters them out of so that one build argument switches them). onnxruntime-gpu and CUDA
# must match: onnxruntime-gpu 1.27+ needs CUDA 13 and cuDNN 9 (host driver >= 580). For CUDA 12 hosts:
#   docker build --target gpu --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg ORT_GPU=onnxruntime-gpu==1.26.0 -t curvecast:gpu-cu12 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG ORT_CPU=onnxruntime==1.32.0
ARG ORT_GPU=onnxruntime-gpu==1.31.1

# ---- wheel: build the curvecast wheel (server, SDK, generated stubs, bundled model) -----------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY client ./client
# The runtime requirements come from pyproject.toml, minus onnxruntime: each image picks its own build
# (onnxruntime and onnxruntime-gpu install the same package directory and must never be mixed).
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('onnxruntime')))" > /wheels/requirements.txt

# ---- gpu-build: virtual environment with onnxruntime-gpu, on the CUDA image's Python ------------------
FROM ${CUDA_IMAGE} AS gpu-build
ARG ORT_GPU
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY constraints/serve.txt constraints/gpu.txt /tmp/
COPY --from=wheel /wheels /wheels
RUN grep -v '^onnxruntime' /tmp/serve.txt > /tmp/constraints.txt \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt -c /tmp/gpu.txt -r /wheels/requirements.txt "${ORT_GPU}" \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/curvecast-*.whl \
 && /opt/venv/bin/python -c "from importlib import metadata as m; names = {d.metadata['Name'].lower() for d in m.distributions()}; assert 'onnxruntime' not in names, 'CPU onnxruntime leaked into the GPU image'"

# ---- gpu: CUDA runtime + cuDNN from the base image; falls back to CPU if no GPU is visible -------------
FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 curvecast \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin curvecast
COPY --from=gpu-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    CURVECAST_HOST=[::] \
    CURVECAST_PORT=50051 \
    CURVECAST_METRICS_PORT=9464 \
    CURVECAST_DEVICE=cuda \
    CURVECAST_WORKERS=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["curvecast", "health", "--server", "127.0.0.1:50051", "--timeout", "3"]
ENTRYPOINT ["curvecast-server"]

# ---- cpu-build: virtual environment with the CPU onnxruntime --------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-build
ARG ORT_CPU
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY constraints/serve.txt /tmp/serve.txt
COPY --from=wheel /wheels /wheels
RUN grep -v '^onnxruntime' /tmp/serve.txt > /tmp/constraints.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt -r /wheels/requirements.txt "${ORT_CPU}" \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/curvecast-*.whl \
 && /opt/venv/bin/python -c "from importlib import metadata as m; names = {d.metadata['Name'].lower() for d in m.distributions()}; assert 'onnxruntime-gpu' not in names, 'onnxruntime-gpu leaked into the CPU image'" \
 && /opt/venv/bin/curvecast-server --help > /dev/null

# ---- cpu (default): slim Python, no compilers, no pip cache ----------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
RUN groupadd --system --gid 10001 curvecast \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin curvecast
COPY --from=cpu-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    CURVECAST_HOST=[::] \
    CURVECAST_PORT=50051 \
    CURVECAST_METRICS_PORT=9464 \
    CURVECAST_DEVICE=cpu
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
# Docker/compose only (Kubernetes uses its native gRPC probes). With TLS on, override it with
# `curvecast health --tls --ca ...` flags; health needs no bearer token.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["curvecast", "health", "--server", "127.0.0.1:50051", "--timeout", "3"]
ENTRYPOINT ["curvecast-server"]
