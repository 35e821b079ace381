#!/usr/bin/env bash
# The Debian/Ubuntu packages skipwatch's local system and tests need, installed when missing:
# redis-server (the view store), Chromium and CJK fonts (dashboard tests and screenshots), and
# python3-venv when uv is not on PATH (the Makefile then puts a pinned uv in .uv/).
# Java 17 and Maven are prerequisites (README); the Kafka broker jars come from Maven Central
# through deploy/kafka/kafka.sh fetch. Runs as root, or through sudo when available.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
# CJK glyphs so dashboard screenshots show 中文 (borrower names, rule titles)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
command -v uv >/dev/null || python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
  echo "[sysdeps] missing Debian packages: ${need[*]}; install them as root:" >&2
  echo "  apt-get update && apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "[sysdeps] installing ${need[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
