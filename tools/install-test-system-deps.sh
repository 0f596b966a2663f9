#!/usr/bin/env bash
# System packages the GUI tests need: a real X server (Xvfb) and the xcb libraries Qt loads.
# As root this installs them with apt-get; otherwise it says what to install and continues.
set -u
PKGS="xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0 libxcb-randr0
libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 libxkbcommon-x11-0 libgl1 libegl1 libdbus-1-3 libfontconfig1"
if command -v Xvfb >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q libxcb-icccm.so.4; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq $PKGS >/dev/null && exit 0
  echo "apt-get could not install: $PKGS" >&2
  exit 1
fi
echo "GUI tests need Xvfb and Qt's xcb libraries; please install (Debian/Ubuntu): sudo apt-get install $PKGS" >&2
exit 0
