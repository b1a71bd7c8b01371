import { escape as lineEscape, type WritePrecisionType } from '@influxdata/influxdb-client';
import { formatDuration } from '../../common/duration.js';
import type { AlertTransition } from '../../contract/alerts.js';
import type { CanonicalEvent } from '../../contract/event.js';
import {
  AGGREGATE_FIELDS,
  AGGREGATE_MEASUREMENT,
  ALERTS_MEASUREMENT,
  DEVICE_STATUS_MEASUREMENT,
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
import { PointInvalidError } from '../errors.js';
import type { DeviceStatusRow } from '../presence/presence-tracker.js';
import type { FleetRow } from '../rollups/fleet-rollup.js';
import type { WindowResult } from '../windows/device-windows.js';

/**
 * InfluxDB line protocol for everything the processors write, defined once. Pure: no I/O; the writer
 * (influx-writer.ts) sends the lines.
 *
 * Lines are built here rather than through the client's `Point`: a Point is an object with two
 * dictionaries per line, sorted and escaped again on serialisation, and at tens of thousands of
 * events per second that garbage was a quarter of the processor's time. The escaping is still the
 * client's own (`escape`), tags and fields come out sorted as `Point` sorts them, and numbers are
 * formatted as `Point.floatField` formats them, so the lines are byte for byte what Point would give.
 *
 * - Times are milliseconds (WRITE_PRECISION): event times in the contract have millisecond
 *   precision at most, so nothing is lost and lines stay short.
 * - Every number is a float field (no `i` suffix), so a field never flips between integer and float
 *   (InfluxDB rejects a field whose type changes within a shard).
 * - The same series and time for every emission of a window, so a corrected window overwrites the
 *   earlier one in InfluxDB.
 */
export const WRITE_PRECISION: WritePrecisionType = 'ms';

type Tags = ReadonlyArray<readonly [key: string, value: string]>;

function byKey(a: readonly [string, string], b: readonly [string, string]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

/** What the client's escape.tag escapes (tab, newline, carriage return, space, comma, equals). */
const NEEDS_TAG_ESCAPE = /[\t\n\r ,=]/;

/**
 * A tag key, tag value or field key as the client escapes it. Almost none needs escaping, and the
 * client's escape walks every character: a regular expression tells first.
 */
function tagText(value: string): string {
  return NEEDS_TAG_ESCAPE.test(value) ? lineEscape.tag(value) : value;
}

/** `measurement,k=v,…` with tags sorted by key and empty values left out (InfluxDB has no empty tags). */
function seriesKey(measurement: string, tags: Tags): string {
  let key = lineEscape.measurement(measurement);
  for (const [name, value] of [...tags].sort(byKey)) {
    if (value === '') continue;
    key += `,${tagText(name)}=${tagText(value)}`;
  }
  return key;
}

function float(value: number): string {
  if (!Number.isFinite(value)) throw new RangeError(`${value} is not a finite number`);
  return String(value);
}

/**
 * The client escapes spaces, commas and `=`, but not a trailing backslash, which would escape the
 * separator after it and corrupt the line (Point.tag: "must not end with backslash").
 */
function checkTags(tags: Tags, eventId: string): void {
  for (const [name, value] of tags) {
    if (value.endsWith('\\')) throw new PointInvalidError(`tag ${name} ends with a backslash`, eventId);
  }
}

/** Where a `telemetry` tag's value comes from: the event's tenant, its device, or one of its labels. */
type TagSource = { name: string; escapedName: string; from: 'tenant' | 'device' | 'label' };

/** The `telemetry` tags in the order they are checked (tenant, device, labels) and in line order. */
interface TelemetryLayout {
  checked: TagSource[];
  sorted: TagSource[];
}

const layouts = new WeakMap<readonly string[], TelemetryLayout>();

function telemetryLayout(promotedLabels: readonly string[]): TelemetryLayout {
  let layout = layouts.get(promotedLabels);
  if (layout === undefined) {
    const checked: TagSource[] = [
      { name: TAG_TENANT, escapedName: tagText(TAG_TENANT), from: 'tenant' },
      { name: TAG_DEVICE, escapedName: tagText(TAG_DEVICE), from: 'device' },
      ...promotedLabels.map((name) => ({ name, escapedName: tagText(name), from: 'label' as const })),
    ];
    // Sorted as Point sorts its tags (and seriesKey), once per list of promoted labels.
    const sorted = [...checked].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    layout = { checked, sorted };
    layouts.set(promotedLabels, layout);
  }
  return layout;
}

function tagValue(event: CanonicalEvent, tag: TagSource): string | undefined {
  return tag.from === 'tenant'
    ? event.tenant
    : tag.from === 'device'
      ? event.deviceId
      : event.labels[tag.name];
}

const TELEMETRY_KEY = lineEscape.measurement(TELEMETRY_MEASUREMENT);

/**
 * One `telemetry` line per canonical event: tags tenant, device and the promoted labels the event
 * carries; one float field per metric in its canonical unit; time = event time (`tsMs` when the
 * event was decoded with it). Undefined when the event has no metrics (nothing to store). Throws
 * PointInvalidError for what cannot be a line. Built as one string: no tag or field arrays.
 */
export function telemetryLine(
  event: CanonicalEvent & { tsMs?: number },
  promotedLabels: readonly string[] = PROMOTED_LABELS,
): string | undefined {
  const metrics = event.metrics;
  const names = Object.keys(metrics);
  if (names.length === 0) return undefined;
  const layout = telemetryLayout(promotedLabels);
  for (const tag of layout.checked) {
    const value = tagValue(event, tag);
    if (value?.endsWith('\\')) throw new PointInvalidError(`tag ${tag.name} ends with a backslash`, event.id);
  }
  // A decoded event (contract/decode-canonical-event.ts) carries its time parsed already.
  const time = event.tsMs ?? Date.parse(event.ts);
  if (Number.isNaN(time)) throw new PointInvalidError(`ts ${event.ts} is not a date`, event.id);
  let line = TELEMETRY_KEY;
  for (const tag of layout.sorted) {
    const value = tagValue(event, tag);
    if (value === undefined || value === '') continue;
    line += `,${tag.escapedName}=${tagText(value)}`;
  }
  if (names.length > 1) names.sort();
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    let value: string;
    try {
      value = float(metrics[name]!.value);
    } catch (err) {
      throw new PointInvalidError(`metric ${name} is not a finite number`, event.id, { cause: err });
    }
    line += `${i === 0 ? ' ' : ','}${tagText(name)}=${value}`;
  }
  return `${line} ${time}`;
}

const SORTED_AGGREGATE_FIELDS = [...AGGREGATE_FIELDS].sort();
const AGGREGATE_KEY = lineEscape.measurement(AGGREGATE_MEASUREMENT);
/** The `window` tag of each window size, formatted once. */
const windowTags = new Map<number, string>();

function windowTag(windowMs: number): string {
  let tag = windowTags.get(windowMs);
  if (tag === undefined) {
    tag = tagText(formatDuration(windowMs));
    windowTags.set(windowMs, tag);
  }
  return tag;
}

/**
 * One `telemetry_agg` line per window emission; time = window start. Tags in sorted order (device,
 * metric, tenant, window), as seriesKey would put them.
 */
export function aggregateLine(r: WindowResult): string {
  let line = AGGREGATE_KEY;
  if (r.deviceId !== '') line += `,${TAG_DEVICE}=${tagText(r.deviceId)}`;
  if (r.metric !== '') line += `,${TAG_METRIC}=${tagText(r.metric)}`;
  if (r.tenant !== '') line += `,${TAG_TENANT}=${tagText(r.tenant)}`;
  line += `,${TAG_WINDOW}=${windowTag(r.windowMs)}`;
  const values = r.values;
  for (let i = 0; i < SORTED_AGGREGATE_FIELDS.length; i++) {
    const f = SORTED_AGGREGATE_FIELDS[i]!;
    line += `${i === 0 ? ' ' : ','}${f}=${float(values[f])}`;
  }
  return `${line} ${r.startMs}`;
}

/** One `alerts` line per transition: `value` (0 when the value is not finite, e.g. absence), `state`. */
export function alertLine(t: AlertTransition): string {
  const tags: Tags = [
    [TAG_TENANT, t.tenant],
    [TAG_DEVICE, t.deviceId],
    [TAG_RULE, t.rule],
    [TAG_SEVERITY, t.severity],
  ];
  const value = Number.isFinite(t.value) ? t.value : 0;
  return `${seriesKey(ALERTS_MEASUREMENT, tags)} state=${lineEscape.quoted(t.state)},value=${float(value)} ${Math.floor(t.atMs)}`;
}

/** One `fleet_agg` line per fleet window and group; time = window start. */
export function fleetLine(row: FleetRow): string {
  const tags: Tags = [
    [TAG_TENANT, row.tenant],
    [TAG_METRIC, row.metric],
    [TAG_WINDOW, row.window],
    [TAG_GROUP, row.group],
    [TAG_GROUP_VALUE, row.groupValue],
  ];
  // group_value is a registry label's value: it may end in a backslash.
  checkTags(tags, `fleet ${row.tenant} ${row.metric} ${row.window} ${row.startMs}`);
  const fields = `count=${float(row.count)},devices=${float(row.devices)},max=${float(row.max)},mean=${float(row.mean)},min=${float(row.min)}`;
  return `${seriesKey(FLEET_MEASUREMENT, tags)} ${fields} ${row.startMs}`;
}

/** One `device_status` line each time a device goes online or offline: `online` 1|0 and the reason. */
export function deviceStatusLine(row: DeviceStatusRow): string {
  const tags: Tags = [
    [TAG_TENANT, row.tenant],
    [TAG_DEVICE, row.deviceId],
  ];
  const fields = `online=${row.online ? 1 : 0},reason=${lineEscape.quoted(row.reason)}`;
  return `${seriesKey(DEVICE_STATUS_MEASUREMENT, tags)} ${fields} ${Math.floor(row.atMs)}`;
}
