FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends qemu-utils dnsmasq-base gdisk cpio \
      && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY metalflow metalflow
COPY workflows workflows
COPY activities activities
COPY worker worker
COPY k8s_bridge k8s_bridge
RUN pip install --no-cache-dir .
USER 65532
ENTRYPOINT []
CMD ["metalflow", "worker"]
