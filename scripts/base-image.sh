#!/usr/bin/env bash
# Offline base image for the reference services: debootstrap + `docker import`, no registry needed.
# Idempotent: skipped when the image exists with the same recipe (label org.mediaconduit.base.recipe).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${MEDIACONDUIT_BASE_IMAGE:-mediaconduit/base:bookworm}"
SUITE="${BASE_SUITE:-bookworm}"
MIRROR="${BASE_MIRROR:-http://deb.debian.org/debian}"
# Debian packages the reference services need (espeak, tesseract, ffmpeg, curl for compose-style healthchecks),
# and git for workers running in containers (compose/), which clone providers.
PACKAGES="python3,espeak-ng,tesseract-ocr,ffmpeg,curl,git,ca-certificates"
# Pure wheels dropped into the rootfs from this host's pip (same bookworm Python 3.11 ABI):
# pocketsphinx for the offline whisper service, cowsay for the cowsay service.
PIP_PACKAGES="pocketsphinx==5.1.1 cowsay==6.1"
CACHE="${BASE_CACHE:-/var/cache/mediaconduit-base}"

recipe="$(printf '%s|%s|%s|%s|v1' "$SUITE" "$MIRROR" "$PACKAGES" "$PIP_PACKAGES" | sha256sum | cut -c1-16)"
have="$(docker image inspect -f '{{ index .Config.Labels "org.mediaconduit.base.recipe" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$have" = "$recipe" ]; then
  echo "base-image: $IMAGE is up to date (recipe $recipe), nothing to do"
  exit 0
fi

command -v debootstrap >/dev/null || { echo "base-image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
# The project's venv has the pip that fetches the wheels (a fresh CI machine gets it made here first).
[ -x .venv/bin/python ] || make -s venv
PIP=(.venv/bin/python -m pip)

ROOTFS="$(mktemp -d /var/tmp/mediaconduit-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
mkdir -p "$CACHE"
start=$(date +%s)
echo "base-image: debootstrap --variant=minbase $SUITE with $PACKAGES (cache $CACHE)"
debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$CACHE" "$SUITE" "$ROOTFS" "$MIRROR" \
  2>&1 | grep -E '^(I: (Retrieving Release|Resolving|Found additional|Checking component|Installing core|Configuring required|Base system)|E: |W: )' || true
[ -x "$ROOTFS/usr/bin/python3" ] || { echo "base-image: debootstrap failed (no python3 in the rootfs)" >&2; exit 1; }
echo "base-image: debootstrap done in $(( $(date +%s) - start ))s"

pyver="$(chroot "$ROOTFS" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
echo "base-image: pip wheels for python $pyver: $PIP_PACKAGES"
# shellcheck disable=SC2086
"${PIP[@]}" install --disable-pip-version-check -q --no-deps --only-binary=:all: --python-version "$pyver" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
  --target "$ROOTFS/usr/local/lib/python$pyver/dist-packages" $PIP_PACKAGES 2>&1 | grep -v 'is ignored: it is neither' || true
chroot "$ROOTFS" python3 -c 'import pocketsphinx, cowsay' \
  || { echo "base-image: pip packages do not import inside the rootfs" >&2; exit 1; }

rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*
echo "base-image: importing into docker as $IMAGE"
tar -C "$ROOTFS" -c . | docker import \
  -c "ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  -c "LABEL org.mediaconduit.base.recipe=$recipe org.mediaconduit.base.packages=$PACKAGES" \
  -c 'CMD ["python3"]' - "$IMAGE" >/dev/null
echo "base-image: built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')) in $(( $(date +%s) - start ))s"
