#!/bin/bash
# startup-rss.sh CA_BIN DIR [ENV=VALUE...]: start 'CA_BIN serve' on DIR/ca.yaml (a
# registry made by seed.sh), wait until it has built its first full CRL, and print
# its peak RSS (VmHWM), its CPU so far and the CRL build's log figures; then stop it.
set -uo pipefail
bin=$1; dir=$2; shift 2
log=$(mktemp)
env "$@" "$bin" serve --config "$dir/ca.yaml" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 1200); do
  grep -q 'msg="CRL rebuilt" partition=0' "$log" && break
  kill -0 $pid 2>/dev/null || { echo "ca serve exited:"; tail -5 "$log"; exit 1; }
  sleep 0.5
done
sleep 3
hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
cpu=$(awk '{print ($14+$15)/100}' /proc/$pid/stat)
crl=$(grep -o 'msg="CRL rebuilt" partition=0.*' "$log" | head -1 | grep -o 'entries=[0-9]* bytes=[0-9]*\|read=[^ ]*\|duration=[^ ]*' | tr '\n' ' ')
kill $pid; wait $pid 2>/dev/null
rm -f "$log"
echo "VmHWM $((hwm / 1024)) MB, CPU ${cpu}s; first full CRL: $crl"
