#!/usr/bin/env bash
# Installs what `npm start` and `npm test` need on a Debian machine with Node 20: the Debian packages
# nats-server, victoria-metrics, mosquitto-clients, influxdb (1.x), chromium (and openssl), the
# third-party MQTT clients the tests drive (the mosquitto broker as a bridge, python3-paho-mqtt),
# curl and tmux, and the npm dependencies. Idempotent, and a
# no-op taking about a second when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node.js 20 or newer is required (found $(node --version))" >&2
  exit 1
fi

missing=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || missing+=(openssl) # tests make throwaway TLS certificates
# InfluxDB 1.x runs every dashboard query in a test; Chromium drives the live view's browser test.
command -v influxd >/dev/null 2>&1 || [ -x /usr/bin/influxd ] || missing+=(influxdb)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# Clients nobody here wrote: a mosquitto bridge and paho (Debian's python3, not a pyenv one).
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
/usr/bin/python3 -c 'import paho.mqtt' >/dev/null 2>&1 || missing+=(python3-paho-mqtt)
# curl posts to the HTTP ingest; tmux gives `npm start` a real terminal in the first-run test.
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages enable system services on fixed ports; this project runs its own instances.
  if [ -d /run/systemd/system ]; then
    for unit in nats-server victoria-metrics influxdb mosquitto; do
      $sudo systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
  fi
fi

# npm ci only when package-lock.json changed since the last successful install.
stamp=node_modules/.setup-stamp
sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
  npm ci --no-audit --no-fund
  echo "$sum" >"$stamp"
fi
# Debian installs nats-server in /usr/sbin, which is not on a normal user's PATH.
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
echo "setup: ready (nats-server $("$nats_bin" --version 2>/dev/null | awk '{print $2}'), node $(node --version))"
