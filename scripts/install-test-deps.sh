#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages when it is missing:
# prometheus + promtool, prometheus-pushgateway (benchmark baseline), docker-compose (config
# validation only), chromium (status page test), iproute2 + nftables (fault tests), kubectl,
# victoria-metrics (remote-write backend; its vmagent is the remote-write benchmark's baseline),
# fonts-dejavu-core (the TrueType font kube-relay-report draws its plots' text with).
# Does nothing when everything is present. Needs root (or sudo) to install.
set -euo pipefail

need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v chromium >/dev/null || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
command -v victoria-metrics >/dev/null || need+=(victoria-metrics)
command -v vmagent >/dev/null || need+=(victoria-metrics)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
compose=0; command -v docker-compose >/dev/null || compose=1
kubectl=0; command -v kubectl >/dev/null || kubectl=1
if ((${#need[@]} == 0 && compose == 0 && kubectl == 0)); then
  exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "install-test-deps: missing ${need[*]} (docker-compose: $compose, kubectl: $kubectl) and not root; install them and retry" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-test-deps: installing ${need[*]}$( ((compose)) && echo ' docker-compose')$( ((kubectl)) && echo ' kubectl')"
$sudo apt-get update -q
if ((${#need[@]})); then $sudo apt-get install -y -q "${need[@]}"; fi
if ((compose)); then $sudo apt-get install -y -q --no-install-recommends docker-compose; fi
if ((kubectl)); then
  $sudo apt-get install -y -q kubectl || $sudo apt-get install -y -q kubernetes-client ||
    echo "install-test-deps: WARNING: could not install kubectl (packages kubectl, kubernetes-client); the kubectl compatibility test will be skipped (failed in CI)" >&2
fi
