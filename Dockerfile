# One image for every regtune process: the API, the runners, the Optuna dashboard.
FROM python:3.11-slim
WORKDIR /app
# a C compiler: batched training builds its fused optimizer step on first use (tuner/train/_kernels.py)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
# torch first, from the CPU index: a plain `torch` requirement would pull a CUDA build of several GB
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY tuner ./tuner
COPY api ./api
COPY studies ./studies
# the library, the service (API, runner, dashboard, PostgreSQL) and the Ray backend: the compose file runs them all
RUN pip install --no-cache-dir '.[service,ray]'
ENV REGTUNE_DATA_DIR=/data
EXPOSE 8000
CMD ["regtune", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-runner"]
