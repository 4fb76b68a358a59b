#!/usr/bin/env bash
# `make demo`: the whole story on one machine, on embedded defaults.
#   a station (its own Mosquitto with TLS and the per-device ACL, the receiver) and a simulated device that
#   runs the complete-inspection scenario, then syncs: the station verifies, stores and acknowledges; the
#   device records the receipts and purges the acknowledged segments.
set -euo pipefail
BIN=${BIN:-.venv/bin}
DEMO=${DEMO:-$PWD/.demo}
DEVICE_ID=cam-demo
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if [ ! -x "$mosquitto_bin" ]; then
  echo "demo: mosquitto is not installed (run 'make test' as root once, or apt-get install mosquitto)" >&2
  exit 2
fi
port=$("$BIN/python" -c 'from sync.broker import free_port; print(free_port())')
rm -rf "$DEMO"
mkdir -p "$DEMO/device" "$DEMO/station"

echo "== a simulated officer runs a complete inspection (scripted buttons, synthetic camera, real H.264)"
"$BIN/bodycam-agent" simulate --store "$DEMO/device/store" --key "$DEMO/device/device.key" \
  --device-id "$DEVICE_ID" --officer-id A1234 \
  --scenario firmware_config/scenarios/complete-inspection.toml --segment-seconds 10

echo "== the station: CA, broker certificate, the device's client certificate, ACL, Mosquitto config"
"$BIN/bodycam-station" broker-setup --dir "$DEMO/station/broker" --port "$port" --device "$DEVICE_ID" \
  --run-as "$(id -un)"
cat > "$DEMO/station/station.toml" <<EOF
[station]
id = "station-demo"
data = "$DEMO/station/data"
key = "$DEMO/station/ack.key"

[broker]
host = "127.0.0.1"
port = $port
ca = "$DEMO/station/broker/ca.crt"
cert = "$DEMO/station/broker/station.crt"
key = "$DEMO/station/broker/station.key"
EOF
"$BIN/bodycam-provision" show-key --key "$DEMO/device/device.key" --pem > "$DEMO/device/device.pub"
"$BIN/bodycam-station" add-device --config "$DEMO/station/station.toml" --device-id "$DEVICE_ID" \
  --pubkey "$DEMO/device/device.pub"
"$BIN/bodycam-station" show-key --config "$DEMO/station/station.toml" > "$DEMO/device/station.pub"

"$mosquitto_bin" -c "$DEMO/station/broker/mosquitto.conf" > "$DEMO/station/mosquitto.log" 2>&1 &
PIDS+=($!)
"$BIN/bodycam-station" serve --config "$DEMO/station/station.toml" > "$DEMO/station/receiver.log" 2>&1 &
PIDS+=($!)

echo "== the device docks and syncs (MQTT 5 over TLS with its client certificate)"
cat > "$DEMO/device/device.toml" <<EOF
[device]
id = "$DEVICE_ID"
officer = "A1234"
store = "$DEMO/device/store"
key = "$DEMO/device/device.key"

[control_socket]
path = "$DEMO/device/control.sock"

[sync]
broker_host = "127.0.0.1"
broker_port = $port
ca = "$DEMO/station/broker/ca.crt"
cert = "$DEMO/station/broker/clients/$DEVICE_ID.crt"
key = "$DEMO/station/broker/clients/$DEVICE_ID.key"
station_key = "$DEMO/device/station.pub"
EOF
"$BIN/bodycam-sync" --config "$DEMO/device/device.toml" --once --timeout 120

echo "== at the station: what it verified and stored, and the case timeline"
"$BIN/bodycam-station" status --config "$DEMO/station/station.toml"
"$BIN/bodycam-station" timeline --config "$DEMO/station/station.toml" --device "$DEVICE_ID"
echo "== an auditor verifies the station's copy against the device's key"
"$BIN/bodycam-verify" "$DEMO/station/data/devices/$DEVICE_ID" --pubkey "$DEMO/device/device.pub"

echo "== on the device: receipts recorded, acknowledged segments purged (each purge a signed record)"
grep -c '"type":"receipt"' "$DEMO/device/store/ledger.jsonl" | sed 's/^/receipt records: /'
grep -o '"file":"segments/[0-9a-z.]*","reason":"[^"]*"' "$DEMO/device/store/ledger.jsonl" \
  | sed 's/^/purged: /' || true
echo "segment files left on the device: $(find "$DEMO/device/store/segments" -type f | wc -l)"
"$BIN/bodycam-verify" "$DEMO/device/store" --pubkey "$DEMO/device/device.pub"
