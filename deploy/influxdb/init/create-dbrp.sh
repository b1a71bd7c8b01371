#!/bin/bash
# InfluxDB 2 runs this once, after its first-boot setup (DOCKER_INFLUXDB_INIT_MODE=setup) and
# before it serves: the `influx` CLI is already configured with the admin token, and the entrypoint
# exports the new bucket's id. It maps InfluxQL database `<bucket>`, retention policy `autogen`, to
# the bucket, as the default policy: Grafana's InfluxQL datasource (dashboards/provisioning) queries
# database `telemetry`, the bucket the processors write. InfluxDB 2.x would also answer through a
# virtual mapping of the same name, but an explicit one is listed by `influx v1 dbrp list`,
# survives a bucket rename, and is what InfluxDB's own InfluxQL guide sets up.
# Must stay executable: the entrypoint runs only executable *.sh files (run-parts).
set -euo pipefail

bucket="${DOCKER_INFLUXDB_INIT_BUCKET:?}"
bucket_id="${DOCKER_INFLUXDB_INIT_BUCKET_ID:-}"
if [ -z "$bucket_id" ]; then
  # Older entrypoints did not export the id; the first column of the listing is the id.
  bucket_id="$(influx bucket list --name "$bucket" --hide-headers | cut -f 1)"
fi

influx v1 dbrp create --bucket-id "$bucket_id" --db "$bucket" --rp autogen --default
