#!/usr/bin/env bash
# Prints where the compose stack's HTTP gateway and Prometheus answer on the host, for the stack's env file
# (default compose/.env), and how to make a tenant's key for the gateway: `make up` ends with it.
set -euo pipefail
env_file="${1:-compose/.env}"
# shellcheck disable=SC1090
. "$env_file"
printf 'Gateway (HTTP API, docs/http.md): http://127.0.0.1:%s (a key: docker-compose -p mediaconduit --env-file %s -f compose/docker-compose.yml exec -T gateway mediaconduit keys create --tenant NAME)\n' \
  "${MEDIACONDUIT_GATEWAY_PORT:-8700}" "$env_file"
printf 'Prometheus (workers and gateway scraped): http://127.0.0.1:%s\n' "${MEDIACONDUIT_PROMETHEUS_PORT:-9090}"
