# CPU image serving the shipped default model:
#   docker build -t odeformer .
#   docker run --rm -p 8000:8000 odeformer            # then http://127.0.0.1:8000/
#   docker run --rm -p 8000:8000 -e ODEFORMER_API_KEY=secret odeformer
# Build arguments, for builders that cannot reach Docker Hub or PyTorch's index (scripts/docker_smoke.sh):
#   BASE_IMAGE         a Python 3.11 image with pip and `python` on the PATH (default python:3.11-slim)
#   TORCH_INDEX_URL    the index torch and its dependencies come from (default PyTorch's CPU wheel index)
#   TORCH_FIND_LINKS   a folder of wheels (mounted into the build) searched as well, e.g. a staged CPU wheel
#   TORCH_SPEC         the torch requirement (default torch>=2.3; with a staged wheel pin it, torch==2.13.0+cpu)
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app

# torch's CPU build from PyTorch's CPU wheel index: the default index would pull the multi-GB CUDA build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
ARG TORCH_SPEC="torch>=2.3"
RUN pip install --index-url "$TORCH_INDEX_URL" ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} "$TORCH_SPEC"

COPY pyproject.toml README.md ./
COPY odeformer ./odeformer
COPY data_gen ./data_gen
COPY service ./service
COPY checkpoints ./checkpoints
# a regular (non-editable) install: the default checkpoint is package data
RUN pip install . && rm -rf /app/*

RUN useradd --create-home --uid 1000 odeformer
USER odeformer
WORKDIR /home/odeformer

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"
CMD ["odeformer", "serve", "--host", "0.0.0.0", "--port", "8000"]
