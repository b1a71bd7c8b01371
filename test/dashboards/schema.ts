import type { Registry } from 'prom-client';
import {
  AGGREGATE_FIELDS,
  AGGREGATE_MEASUREMENT,
  ALERTS_MEASUREMENT,
  DEVICE_STATUS_MEASUREMENT,
  FLEET_FIELDS,
  FLEET_MEASUREMENT,
  PROMOTED_LABELS,
  TAG_DEVICE,
  TAG_GROUP,
  TAG_GROUP_VALUE,
  TAG_METRIC,
  TAG_RULE,
  TAG_SEVERITY,
  TAG_TENANT,
  TAG_WINDOW,
  TELEMETRY_MEASUREMENT,
} from '../../contract/measurements.js';
import { createGatewayMetrics } from '../../gateway/metrics.js';
import { createProcessorMetrics } from '../../processors/metrics.js';
import { alertLine, deviceStatusLine } from '../../processors/sink/lines.js';
import type { InfluxSchema } from './influxql-references.js';

/** Field keys of one line of protocol (`m,tags fields time`), quoted string values skipped over. */
export function lineFieldKeys(line: string): string[] {
  // Past the first unescaped space: the field set, up to the space before the timestamp.
  const fieldSet = line.replace(/^(?:\\.|[^ \\])+ /, '').replace(/ \d+$/, '');
  const keys: string[] = [];
  for (const m of fieldSet.matchAll(/(?:^|,)((?:\\.|[^=\\])+)=(?:"(?:\\.|[^"\\])*"|[^,]*)/g)) {
    keys.push(m[1]!.replace(/\\(.)/g, '$1'));
  }
  return keys;
}

/**
 * The measurements, tags and fields the processors write, from the contract. The contract names no
 * constants for the fields of `alerts` and `device_status`; those are read off lines built by
 * processors/sink/lines.ts, so a renamed field there shows up here.
 */
export function influxSchema(): InfluxSchema {
  const alertFields = lineFieldKeys(
    alertLine({
      tenant: 't',
      deviceId: 'd',
      rule: 'r',
      severity: 'info',
      state: 'firing',
      value: 1,
      atMs: 0,
      message: '',
    }),
  );
  const statusFields = lineFieldKeys(
    deviceStatusLine({ tenant: 't', deviceId: 'd', online: true, reason: 'connected', atMs: 0 }),
  );
  return new Map([
    [TELEMETRY_MEASUREMENT, { tags: new Set([TAG_TENANT, TAG_DEVICE, ...PROMOTED_LABELS]), fields: 'any' }],
    [
      AGGREGATE_MEASUREMENT,
      { tags: new Set([TAG_TENANT, TAG_DEVICE, TAG_METRIC, TAG_WINDOW]), fields: new Set(AGGREGATE_FIELDS) },
    ],
    [
      FLEET_MEASUREMENT,
      {
        tags: new Set([TAG_TENANT, TAG_METRIC, TAG_WINDOW, TAG_GROUP, TAG_GROUP_VALUE]),
        fields: new Set(FLEET_FIELDS),
      },
    ],
    [
      ALERTS_MEASUREMENT,
      { tags: new Set([TAG_TENANT, TAG_DEVICE, TAG_RULE, TAG_SEVERITY]), fields: new Set(alertFields) },
    ],
    [DEVICE_STATUS_MEASUREMENT, { tags: new Set([TAG_TENANT, TAG_DEVICE]), fields: new Set(statusFields) }],
  ]);
}

/** A Prometheus series name and the labels it may carry. */
export type MetricCatalog = ReadonlyMap<string, ReadonlySet<string>>;

/** Labels Prometheus adds to every scraped series. */
export const SCRAPE_LABELS = ['instance', 'job'] as const;

/** Series names a registry exposes (histograms as _bucket/_sum/_count), each with its label names. */
export function registryCatalog(registry: Registry): Map<string, Set<string>> {
  const catalog = new Map<string, Set<string>>();
  for (const metric of registry.getMetricsAsArray()) {
    // labelNames is on every prom-client metric object, not on the exported MetricObject type.
    const labels = new Set([
      ...((metric as unknown as { labelNames?: string[] }).labelNames ?? []),
      ...SCRAPE_LABELS,
    ]);
    const type = String(metric.type);
    if (type === 'histogram') {
      catalog.set(`${metric.name}_bucket`, new Set([...labels, 'le']));
      catalog.set(`${metric.name}_sum`, labels);
      catalog.set(`${metric.name}_count`, labels);
    } else if (type === 'summary') {
      catalog.set(metric.name, new Set([...labels, 'quantile']));
      catalog.set(`${metric.name}_sum`, labels);
      catalog.set(`${metric.name}_count`, labels);
    } else {
      catalog.set(metric.name, labels);
    }
  }
  return catalog;
}

/** Fresh gateway and processor registries with sources that answer something. */
export function createRegistries() {
  const gateway = createGatewayMetrics({
    inFlight: () => 3,
    natsConnected: () => true,
    connections: () => 5,
  });
  const processor = createProcessorMetrics({
    ownedPartitions: () => 8,
    pendingLines: () => 120,
    lag: async () =>
      new Map([
        [0, 12],
        [1, 0],
        [2, 40],
      ]),
  });
  return { gateway, processor };
}

/** Every series the gateway and the processors expose on /metrics. */
export function metricCatalog(): MetricCatalog {
  const { gateway, processor } = createRegistries();
  return new Map([...registryCatalog(gateway.registry), ...registryCatalog(processor.registry)]);
}
