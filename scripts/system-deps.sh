#!/usr/bin/env bash
# Installs the Debian packages MuJoCo needs for offscreen rendering (EGL/OSMesa) and ffmpeg tools.
# Runs only as root and only when something is missing, so a second `make` costs nothing.
set -euo pipefail
packages=(libegl1 libgl1 libgl1-mesa-dri libosmesa6 libglu1-mesa)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root, so these Debian packages were not installed: ${missing[*]}" >&2
  echo "      MuJoCo rendering needs them: sudo apt-get install -y ${missing[*]}" >&2
  exit 0
fi
echo "installing Debian packages for offscreen rendering: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
