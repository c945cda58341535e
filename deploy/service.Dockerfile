# The ptyhpc job service on CPU (API, dashboard, executor with a local dask cluster per job).
#   docker build -f deploy/service.Dockerfile -t ptyhpc:service .      (from the repository root)
# GPU nodes: build from deploy/Dockerfile and add the `service` extra and this entry point.
# Not built in this project's CI (no container runtime there).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
COPY . /opt/ptyhpc/src
RUN python -m venv /opt/ptyhpc/venv && \
    /opt/ptyhpc/venv/bin/pip install "/opt/ptyhpc/src[service,cluster]" && \
    /opt/ptyhpc/venv/bin/python -c "import ptyhpc.service.app" && \
    useradd --system --create-home ptyhpc
ENV PATH=/opt/ptyhpc/venv/bin:$PATH
COPY deploy/service-entrypoint.sh /usr/local/bin/ptyhpc-service
USER ptyhpc
EXPOSE 8770
ENTRYPOINT ["/usr/local/bin/ptyhpc-service"]
