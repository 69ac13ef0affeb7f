# The metalflow image: worker, bridge, boot server, dnsmasq and sushy-emulator (demo) in one.
FROM python:3.11-slim
# qemu-img converts qcow2 images; dnsmasq + iPXE binaries serve the boot network (TFTP root
# /usr/lib/ipxe); gdisk/cpio for config drives and ramdisks. xorriso re-masters the base deploy ISO
# per virtual-media host.
RUN apt-get update && apt-get install -y --no-install-recommends qemu-utils dnsmasq-base ipxe gdisk cpio xorriso \
      && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY metalflow metalflow
COPY workflows workflows
COPY activities activities
COPY worker worker
COPY k8s_bridge k8s_bridge
# The `emulator` extra: the compose file's demo profile runs sushy-emulator from this image. The
# test bed (testbed/) is not copied: it is never installed.
RUN pip install --no-cache-dir '.[emulator]' && mkdir -p /var/lib/metalflow && chown 65532 /var/lib/metalflow
USER 65532
EXPOSE 8088 9464 9465
ENTRYPOINT []
CMD ["metalflow", "worker"]
