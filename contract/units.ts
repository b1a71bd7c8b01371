/**
 * Canonical units, declared as data. Every reading leaves the gateway in the canonical unit of its
 * quantity; the unit the device sent is kept as `originalUnit`.
 *
 * A unit converts as `canonical = (value + offset) * scale`. To teach the gateway a unit, add a line
 * here; nothing else changes. (A general units library was considered: none of the maintained ones
 * knows device spellings such as `degF`, `°F` or `%RH`, so the alias table would be ours anyway, and
 * the conversions themselves are one multiply-add each.)
 */
interface UnitDef {
  readonly aliases: readonly string[];
  readonly scale: number;
  readonly offset?: number;
}

interface QuantityDef {
  readonly canonical: string;
  readonly units: readonly UnitDef[];
}

export const QUANTITIES = {
  temperature: {
    canonical: 'degC',
    units: [
      { aliases: ['degC', 'C', '°C', 'Cel', 'celsius'], scale: 1 },
      { aliases: ['degF', 'F', '°F', 'fahrenheit'], offset: -32, scale: 5 / 9 },
      { aliases: ['K', 'kelvin'], offset: -273.15, scale: 1 },
    ],
  },
  pressure: {
    canonical: 'hPa',
    units: [
      { aliases: ['hPa', 'mbar', 'millibar'], scale: 1 },
      { aliases: ['Pa'], scale: 0.01 },
      { aliases: ['kPa'], scale: 10 },
      { aliases: ['bar'], scale: 1000 },
      { aliases: ['psi'], scale: 68.947572932 },
      { aliases: ['atm'], scale: 1013.25 },
      { aliases: ['mmHg', 'torr'], scale: 1.333223684 },
      { aliases: ['inHg'], scale: 33.86388158 },
    ],
  },
  percent: {
    canonical: '%',
    units: [
      { aliases: ['%', 'percent', 'pct', '%RH', 'RH'], scale: 1 },
      { aliases: ['ratio', 'fraction'], scale: 100 },
    ],
  },
  voltage: {
    canonical: 'V',
    units: [
      { aliases: ['V', 'volt'], scale: 1 },
      { aliases: ['mV'], scale: 0.001 },
      { aliases: ['kV'], scale: 1000 },
    ],
  },
  current: {
    canonical: 'A',
    units: [
      { aliases: ['A', 'amp'], scale: 1 },
      { aliases: ['mA'], scale: 0.001 },
    ],
  },
  power: {
    canonical: 'W',
    units: [
      { aliases: ['W', 'watt'], scale: 1 },
      { aliases: ['mW'], scale: 0.001 },
      { aliases: ['kW'], scale: 1000 },
    ],
  },
  energy: {
    canonical: 'Wh',
    units: [
      { aliases: ['Wh'], scale: 1 },
      { aliases: ['kWh'], scale: 1000 },
      { aliases: ['J'], scale: 1 / 3600 },
      { aliases: ['kJ'], scale: 1000 / 3600 },
    ],
  },
  acceleration: {
    canonical: 'm/s2',
    units: [
      { aliases: ['m/s2', 'm/s^2', 'm/s²'], scale: 1 },
      { aliases: ['g', 'gn'], scale: 9.80665 },
      { aliases: ['mg'], scale: 0.00980665 },
    ],
  },
  speed: {
    canonical: 'm/s',
    units: [
      { aliases: ['m/s'], scale: 1 },
      { aliases: ['km/h', 'kph'], scale: 1 / 3.6 },
      { aliases: ['mph'], scale: 0.44704 },
      { aliases: ['kn', 'knot'], scale: 0.514444 },
    ],
  },
  length: {
    canonical: 'm',
    units: [
      { aliases: ['m'], scale: 1 },
      { aliases: ['mm'], scale: 0.001 },
      { aliases: ['cm'], scale: 0.01 },
      { aliases: ['km'], scale: 1000 },
      { aliases: ['in'], scale: 0.0254 },
      { aliases: ['ft'], scale: 0.3048 },
    ],
  },
  frequency: {
    canonical: 'Hz',
    units: [
      { aliases: ['Hz'], scale: 1 },
      { aliases: ['kHz'], scale: 1000 },
      { aliases: ['rpm'], scale: 1 / 60 },
    ],
  },
  duration: {
    canonical: 's',
    units: [
      { aliases: ['s', 'sec'], scale: 1 },
      { aliases: ['ms'], scale: 0.001 },
      { aliases: ['min'], scale: 60 },
      { aliases: ['h'], scale: 3600 },
    ],
  },
  concentration: {
    canonical: 'ppm',
    units: [
      { aliases: ['ppm'], scale: 1 },
      { aliases: ['ppb'], scale: 0.001 },
    ],
  },
  illuminance: { canonical: 'lx', units: [{ aliases: ['lx', 'lux'], scale: 1 }] },
  count: { canonical: 'count', units: [{ aliases: ['count', '1', 'events'], scale: 1 }] },
} as const satisfies Record<string, QuantityDef>;

export type Quantity = keyof typeof QUANTITIES;

/**
 * Metrics whose name alone says what they measure: a unitless (v1) reading of these is taken to be
 * in the canonical unit already, and a v2 reading of them must carry a unit of that quantity.
 * Matched on the whole name or on its last `.`-separated segment (`motor.temperature`).
 */
export const METRIC_QUANTITY_HINTS: Readonly<Record<string, Quantity>> = {
  temperature: 'temperature',
  temp: 'temperature',
  humidity: 'percent',
  battery: 'percent',
  pressure: 'pressure',
  voltage: 'voltage',
  current: 'current',
  power: 'power',
  energy: 'energy',
  vibration: 'acceleration',
  speed: 'speed',
};

interface ResolvedUnit {
  readonly quantity: Quantity;
  readonly canonical: string;
  readonly scale: number;
  readonly offset: number;
}

const UNIT_INDEX: ReadonlyMap<string, ResolvedUnit> = (() => {
  const index = new Map<string, ResolvedUnit>();
  for (const [quantity, def] of Object.entries(QUANTITIES) as [Quantity, QuantityDef][]) {
    for (const unit of def.units) {
      for (const alias of unit.aliases) {
        if (index.has(alias)) throw new Error(`unit alias '${alias}' is declared twice`);
        index.set(alias, { quantity, canonical: def.canonical, scale: unit.scale, offset: unit.offset ?? 0 });
      }
    }
  }
  return index;
})();

/** Own keys only: a metric named `toString` or `a.valueOf` must not find Object.prototype's methods. */
function hintOf(name: string): Quantity | undefined {
  return Object.hasOwn(METRIC_QUANTITY_HINTS, name) ? METRIC_QUANTITY_HINTS[name] : undefined;
}

export function quantityOfMetric(metric: string): Quantity | undefined {
  const hint = hintOf(metric);
  if (hint !== undefined || !metric.includes('.')) return hint;
  return hintOf(metric.slice(metric.lastIndexOf('.') + 1));
}

export function canonicalUnitOf(quantity: Quantity): string {
  return QUANTITIES[quantity].canonical;
}

export type Conversion =
  | { ok: true; value: number; unit: string; quantity: Quantity }
  | { ok: false; reason: 'UNIT_UNKNOWN' | 'UNIT_MISMATCH' | 'VALUE_INVALID'; detail: string };

/** Converts `value` given in `unit` to the canonical unit, checking it fits the metric's quantity. */
export function toCanonical(metric: string, value: number, unit: string): Conversion {
  const resolved = UNIT_INDEX.get(unit);
  if (resolved === undefined) return { ok: false, reason: 'UNIT_UNKNOWN', detail: `unknown unit '${unit}'` };
  const expected = quantityOfMetric(metric);
  if (expected !== undefined && expected !== resolved.quantity) {
    return {
      ok: false,
      reason: 'UNIT_MISMATCH',
      detail: `metric '${metric}' is a ${expected}, unit '${unit}' is a ${resolved.quantity}`,
    };
  }
  const converted =
    resolved.offset === 0 && resolved.scale === 1 ? value : (value + resolved.offset) * resolved.scale;
  // A finite value can still overflow on scaling (1e308 kWh), and JSON would store Infinity as null.
  if (!Number.isFinite(converted)) {
    return {
      ok: false,
      reason: 'VALUE_INVALID',
      detail: `${value} ${unit} is not a finite number in ${resolved.canonical}`,
    };
  }
  return { ok: true, value: converted, unit: resolved.canonical, quantity: resolved.quantity };
}
