#!/bin/sh
# Container entry point of the ptyhpc job service (deploy/service.Dockerfile).
#   docker run -v /data:/data -v /etc/ptyhpc:/etc/ptyhpc:ro -p 127.0.0.1:8770:8770 ptyhpc:service
#   docker exec CONTAINER ptyhpc token create --config /etc/ptyhpc/service.yaml --user NAME --role user
# In a container the config's host must be 0.0.0.0 for the published port to reach it; publish the
# port on the host's loopback (as above) or behind a TLS reverse proxy, never on a public address.
set -eu
CONFIG="${PTYHPC_SERVICE_CONFIG:-/etc/ptyhpc/service.yaml}"
if [ ! -f "$CONFIG" ]; then
    echo "ptyhpc service: no configuration at $CONFIG (mount it, or set PTYHPC_SERVICE_CONFIG)" >&2
    exit 2
fi
if [ "$#" -gt 0 ]; then
    exec "$@"            # e.g. `ptyhpc token create ...`
fi
exec ptyhpc serve --config "$CONFIG"
