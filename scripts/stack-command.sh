#!/usr/bin/env bash
# Prints the command that runs a job on the compose stack from the host, for the stack's env file
# (default compose/.env): `make up` ends with it, and the stack test runs exactly what this prints.
# The printed command reads the Redis password from the env file when it runs, so it is never shown.
set -euo pipefail
env_file="${1:-compose/.env}"
# shellcheck disable=SC1090
. "$env_file"
printf '(. %s && MEDIACONDUIT_BROKER_URL="redis://:$MEDIACONDUIT_REDIS_PASSWORD@127.0.0.1:%s/0" .venv/bin/mediaconduit submit "hello stack" --provider "git+http://127.0.0.1:%s/reference.git#subdirectory=providers/echo-provider" --model upper)\n' \
  "$env_file" "${MEDIACONDUIT_REDIS_PORT:-6380}" "${MEDIACONDUIT_GIT_PORT:-8780}"
