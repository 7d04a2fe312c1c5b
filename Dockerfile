# One image for every regtune process: the API, the runners, the Optuna dashboard.
FROM python:3.11-slim
WORKDIR /app
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
