#!/usr/bin/env bash
# `make demo`: the whole story on one machine, on embedded defaults.
#   the technician's provisioning (docs/provisioning.md: station init, device init, enroll, apply), a station
#   (its own Mosquitto with TLS, the per-device ACL and a revocation list, the receiver) and a simulated device
#   that runs the complete-inspection scenario, then syncs: the station verifies, stores and acknowledges; the
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

echo "== the technician sets up the station: CA, broker and receiver certificates, ACL, revocation list,"
echo "   Mosquitto config, acknowledgement key, station.toml (bodycam-station init)"
"$BIN/bodycam-station" init --dir "$DEMO/station" --host 127.0.0.1 --port "$port" --station-id station-demo \
  --run-as "$(id -un)"

echo "== ... and the device: identity key, MQTT key, device.toml from the synthetic hardware profile, and the"
echo "   enrolment request to carry to the station (bodycam-provision init)"
"$BIN/bodycam-provision" init --dir "$DEMO/device" --device-id "$DEVICE_ID" --hardware synthetic \
  --store "$DEMO/device/store" --officer A1234

echo "== a simulated officer runs a complete inspection (scripted buttons, synthetic camera, real H.264)"
"$BIN/bodycam-agent" simulate --store "$DEMO/device/store" --key "$DEMO/device/device.key" \
  --device-id "$DEVICE_ID" --officer-id A1234 \
  --scenario firmware_config/scenarios/complete-inspection.toml --segment-seconds 10

echo "== the station enrols the device (its key, a client certificate from its CSR); the bundle goes back"
mkdir -p "$DEMO/carried"
"$BIN/bodycam-station" enroll --config "$DEMO/station/station.toml" "$DEMO/device/$DEVICE_ID.request.json" \
  --out "$DEMO/carried/$DEVICE_ID.bundle.json"
"$BIN/bodycam-provision" apply --dir "$DEMO/device" "$DEMO/carried/$DEVICE_ID.bundle.json"
"$BIN/bodycam-provision" show-key --key "$DEMO/device/device.key" --pem > "$DEMO/device/device.pub"

"$mosquitto_bin" -c "$DEMO/station/broker/mosquitto.conf" > "$DEMO/station/mosquitto.log" 2>&1 &
PIDS+=($!)
"$BIN/bodycam-station" serve --config "$DEMO/station/station.toml" > "$DEMO/station/receiver.log" 2>&1 &
PIDS+=($!)
# The device syncs once the receiver listens: on a busy machine its first session would otherwise wait for
# a station that is still starting.
receiver=$!
for _ in $(seq 300); do
  grep -qs "subscribed to" "$DEMO/station/receiver.log" && break
  if ! kill -0 "$receiver" 2>/dev/null; then
    echo "demo: the receiver stopped; its log:" >&2
    cat "$DEMO/station/receiver.log" >&2
    exit 1
  fi
  sleep 0.1
done

echo "== the device docks and syncs (MQTT 5 over TLS with its client certificate)"
"$BIN/bodycam-sync" --config "$DEMO/device/device.toml" --once --timeout 120

echo "== at the station: what it verified and stored, and the case timeline"
"$BIN/bodycam-station" status --config "$DEMO/station/station.toml"
"$BIN/bodycam-station" timeline --config "$DEMO/station/station.toml" --device "$DEVICE_ID"
echo "== an auditor verifies the station's copy against the device's key"
"$BIN/bodycam-station" show-key --config "$DEMO/station/station.toml" > "$DEMO/station/ack.pub"
"$BIN/bodycam-verify" "$DEMO/station/data/devices/$DEVICE_ID" --pubkey "$DEMO/device/device.pub" \
  --station-key "$DEMO/station/ack.pub"

echo "== on the device: receipts recorded, acknowledged segments purged (each purge a signed record)"
grep -c '"type":"receipt"' "$DEMO/device/store/ledger.jsonl" | sed 's/^/receipt records: /'
grep -o '"file":"segments/[0-9a-z.]*","reason":"[^"]*"' "$DEMO/device/store/ledger.jsonl" \
  | sed 's/^/purged: /' || true
echo "segment files left on the device: $(find "$DEMO/device/store/segments" -type f | wc -l)"
"$BIN/bodycam-verify" "$DEMO/device/store" --pubkey "$DEMO/device/device.pub" --device-store
