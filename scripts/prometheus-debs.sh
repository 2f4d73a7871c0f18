#!/usr/bin/env bash
# Debian's prometheus and the packages it needs beyond the base image, downloaded on the host into
# compose/prometheus-debs, so compose/Dockerfile.prometheus builds with no network (dpkg -i, no apt mirror).
# Which packages: apt's own answer inside the base image, read with the host's package lists (the host and
# the base image are both Debian bookworm). Idempotent: skipped when the folder holds the same list.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${BASE_IMAGE:-${MEDIACONDUIT_BASE_IMAGE:-mediaconduit/base:bookworm}}"
OUT=compose/prometheus-debs

command -v apt-get >/dev/null || { echo "prometheus-debs: apt-get is not on this host (a Debian host downloads the packages)" >&2; exit 1; }
plan="$(docker run --rm -v /var/lib/apt/lists:/var/lib/apt/lists:ro "$IMAGE" \
  apt-get install -s -q --no-install-recommends prometheus 2>&1)" \
  || { echo "prometheus-debs: apt cannot resolve prometheus in $IMAGE (run apt-get update on the host): ${plan##*$'\n'}" >&2; exit 1; }
# "Inst NAME (VERSION ...)" lines: exactly the packages and versions the image lacks.
wanted="$(printf '%s\n' "$plan" | awk '/^Inst /{gsub(/\(/, "", $3); print $2 "=" $3}' | sort)"
[ -n "$wanted" ] || { echo "prometheus-debs: apt plans nothing for prometheus in $IMAGE" >&2; exit 1; }
if [ -f "$OUT/packages.txt" ] && [ "$(cat "$OUT/packages.txt")" = "$wanted" ]; then
  echo "prometheus-debs: $OUT is up to date ($(printf '%s\n' "$wanted" | wc -l) packages), nothing to do"
  exit 0
fi
rm -rf "$OUT"; mkdir -p "$OUT"
# shellcheck disable=SC2086
(cd "$OUT" && apt-get download -q -o APT::Sandbox::User=root $wanted >/dev/null)
printf '%s\n' "$wanted" > "$OUT/packages.txt"
echo "prometheus-debs: downloaded $(printf '%s\n' "$wanted" | wc -l) packages into $OUT"
