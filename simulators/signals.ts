/**
 * Seeded randomness and the signal models of simulated devices. Pure: no clock, no I/O. A model's
 * values depend only on its seed and the times it is sampled at, so a run with the same `--seed`
 * sends the same values.
 */

/** FNV-1a of a string: turns `seed/stream/device` into a 32-bit seed. */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** splitmix32: spreads one 32-bit seed into the four words sfc32 needs. */
function splitmix32(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x9e3779b9) | 0;
    let t = a ^ (a >>> 16);
    t = Math.imul(t, 0x21f0aafd);
    t ^= t >>> 15;
    t = Math.imul(t, 0x735a2d97);
    return (t ^ (t >>> 15)) >>> 0;
  };
}

/** sfc32 (Chris Doty-Humphrey's Small Fast Counter, from PractRand): uniform floats in [0, 1). */
export function sfc32(a: number, b: number, c: number, d: number): () => number {
  return () => {
    a |= 0;
    b |= 0;
    c |= 0;
    d |= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4_294_967_296;
  };
}

/**
 * One independent random stream, named by the run seed and a path (`signal`, device index…), so
 * that adding a fault kind never shifts the values of a signal.
 */
export class Rng {
  private readonly next: () => number;
  private spare: number | undefined;

  constructor(seed: number, ...stream: ReadonlyArray<string | number>) {
    const mix = splitmix32(hash32([seed, ...stream].join('/')));
    this.next = sfc32(mix(), mix(), mix(), mix());
    // sfc32's first outputs still show the seed's structure; the reference implementation skips 12.
    for (let i = 0; i < 12; i++) this.next();
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.next();
  }

  between(min: number, max: number): number {
    return min + (max - min) * this.next();
  }

  /** Uniform integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** True with the given probability in percent. */
  percent(p: number): boolean {
    return p > 0 && this.next() * 100 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** Normal deviate (Box–Muller), the second of each pair kept for the next call. */
  normal(mean = 0, sd = 1): number {
    if (this.spare !== undefined) {
      const z = this.spare;
      this.spare = undefined;
      return mean + sd * z;
    }
    const u = 1 - this.next(); // (0, 1]: log(0) would be -Infinity
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return mean + sd * r * Math.cos(2 * Math.PI * v);
  }
}

export const DAY_S = 86_400;

function round(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(Math.max(value, min), max);
}

/** Cosine of the time of day, 1 at `peakHour`, -1 twelve hours later. */
function daily(todS: number, peakHour: number): number {
  return Math.cos((2 * Math.PI * (todS - peakHour * 3600)) / DAY_S);
}

/**
 * A device's sensors. `sample` is called with non-decreasing times (seconds since the run started)
 * and returns each metric in its canonical unit (contract/units.ts), rounded to what such a sensor
 * reports: short decimals, so that every stage stores them exactly.
 */
export interface SignalModel {
  sample(tS: number): Record<string, number>;
}

export const DEVICE_TYPES = ['thermometer', 'environment', 'vibration', 'meter'] as const;
export type DeviceType = (typeof DEVICE_TYPES)[number];

/** Metrics per device type, in the order the models return them. */
export const DEVICE_METRICS: Readonly<Record<DeviceType, readonly string[]>> = {
  thermometer: ['temperature', 'battery'],
  environment: ['temperature', 'humidity', 'pressure', 'battery'],
  vibration: ['vibration', 'temperature', 'battery'],
  meter: ['power', 'energy', 'events'],
};

/** Units for v2 payloads, canonical ones; `events` is a plain counter. */
export const METRIC_UNITS: Readonly<Record<string, string>> = {
  temperature: 'degC',
  humidity: '%',
  pressure: 'hPa',
  battery: '%',
  vibration: 'm/s2',
  power: 'W',
  energy: 'Wh',
  events: 'count',
};

/** Temperature: daily cycle peaking mid-afternoon, sensor noise, and a slow random-walk drift. */
class Temperature {
  private readonly base: number;
  private readonly amplitude: number;
  private drift = 0;
  private lastS: number | undefined;

  constructor(
    private readonly rng: Rng,
    private readonly startTodS: number,
    outdoor: boolean,
  ) {
    this.base = outdoor ? rng.between(6, 18) : rng.between(18, 23);
    this.amplitude = outdoor ? rng.between(3, 7) : rng.between(0.5, 2);
  }

  /** The value without noise and drift: what humidity follows. */
  cycle(tS: number): number {
    return this.amplitude * daily(this.startTodS + tS, 15);
  }

  sample(tS: number): number {
    const dt = this.lastS === undefined ? 0 : tS - this.lastS;
    this.lastS = tS;
    // ~0.6 °C per hour of random walk, held within ±3 °C of the base.
    this.drift = clamp(this.drift + this.rng.normal(0, 0.01 * Math.sqrt(dt)), -3, 3);
    return round(this.base + this.cycle(tS) + this.drift + this.rng.normal(0, 0.15), 2);
  }
}

/** Battery: a slow linear decay from a random charge, reported in 0.1 % steps, never rising. */
class Battery {
  private level: number;
  private readonly perS: number;
  private startS: number | undefined;
  private readonly start: number;

  constructor(rng: Rng) {
    this.start = rng.between(35, 100);
    this.level = this.start;
    // 1–5 % a day, sped up 100× so a minute-long run shows it move.
    this.perS = (rng.between(1, 5) / DAY_S) * 100;
  }

  sample(tS: number): number {
    this.startS ??= tS;
    this.level = Math.max(0, this.start - this.perS * (tS - this.startS));
    return round(this.level, 1);
  }
}

class Thermometer implements SignalModel {
  private readonly temperature: Temperature;
  private readonly battery: Battery;
  constructor(rng: Rng, startTodS: number) {
    this.temperature = new Temperature(rng, startTodS, false);
    this.battery = new Battery(rng);
  }
  sample(tS: number): Record<string, number> {
    return { temperature: this.temperature.sample(tS), battery: this.battery.sample(tS) };
  }
}

/** Outdoor temperature, humidity falling as it warms, barometric pressure wandering slowly. */
class Environment implements SignalModel {
  private readonly temperature: Temperature;
  private readonly battery: Battery;
  private readonly humidityBase: number;
  private pressure: number;
  private readonly pressureBase: number;
  private lastS: number | undefined;

  constructor(
    private readonly rng: Rng,
    startTodS: number,
  ) {
    this.temperature = new Temperature(rng, startTodS, true);
    this.battery = new Battery(rng);
    this.humidityBase = rng.between(45, 70);
    this.pressureBase = rng.between(995, 1030);
    this.pressure = this.pressureBase;
  }

  sample(tS: number): Record<string, number> {
    const dt = this.lastS === undefined ? 0 : tS - this.lastS;
    this.lastS = tS;
    const temperature = this.temperature.sample(tS);
    const humidity = clamp(
      this.humidityBase - 4 * this.temperature.cycle(tS) + this.rng.normal(0, 0.8),
      5,
      100,
    );
    this.pressure = clamp(
      this.pressure + this.rng.normal(0, 0.05 * Math.sqrt(dt)),
      this.pressureBase - 25,
      this.pressureBase + 25,
    );
    return {
      temperature,
      humidity: round(humidity, 1),
      pressure: round(this.pressure + this.rng.normal(0, 0.05), 2),
      battery: this.battery.sample(tS),
    };
  }
}

/** Machine vibration: a steady hum with bursts of spikes (a bearing knocking), and motor temperature. */
class Vibration implements SignalModel {
  private readonly hum: number;
  private spikeLeft = 0;
  private readonly temperature: Temperature;
  private readonly battery: Battery;

  constructor(
    private readonly rng: Rng,
    startTodS: number,
  ) {
    this.hum = rng.between(0.1, 0.6);
    this.temperature = new Temperature(rng, startTodS, false);
    this.battery = new Battery(rng);
  }

  sample(tS: number): Record<string, number> {
    if (this.spikeLeft === 0 && this.rng.percent(1)) this.spikeLeft = this.rng.int(1, 4);
    let vibration = Math.abs(this.rng.normal(this.hum, this.hum * 0.2));
    if (this.spikeLeft > 0) {
      this.spikeLeft--;
      vibration += this.rng.between(3, 15);
    }
    return {
      vibration: round(vibration, 3),
      temperature: round(this.temperature.sample(tS) + 20, 2),
      battery: this.battery.sample(tS),
    };
  }
}

/** An energy meter: power following the working day, energy and an event counter that only grow. */
class Meter implements SignalModel {
  private readonly load: number;
  private energyWh: number;
  private events: number;
  private readonly eventsPerS: number;
  private lastS: number | undefined;

  constructor(
    private readonly rng: Rng,
    private readonly startTodS: number,
  ) {
    this.load = rng.between(150, 900);
    this.energyWh = round(rng.between(1_000, 90_000), 3);
    this.events = rng.int(0, 10_000);
    this.eventsPerS = rng.between(0.05, 2);
  }

  sample(tS: number): Record<string, number> {
    const dt = this.lastS === undefined ? 0 : tS - this.lastS;
    this.lastS = tS;
    const power = Math.max(
      0,
      this.load * (0.6 + 0.4 * Math.max(0, daily(this.startTodS + tS, 13))) + this.rng.normal(0, 5),
    );
    this.energyWh = round(this.energyWh + (power * dt) / 3600, 3);
    // Poisson arrivals, approximated per sample: good enough for a counter that must only grow.
    if (dt > 0 && this.rng.float() < 1 - Math.exp(-this.eventsPerS * dt)) this.events += this.rng.int(1, 3);
    return { power: round(power, 1), energy: this.energyWh, events: this.events };
  }
}

/** The model of one device; `startTodS` is the time of day (seconds) at which the run starts. */
export function createSignalModel(type: DeviceType, rng: Rng, startTodS: number): SignalModel {
  switch (type) {
    case 'thermometer':
      return new Thermometer(rng, startTodS);
    case 'environment':
      return new Environment(rng, startTodS);
    case 'vibration':
      return new Vibration(rng, startTodS);
    case 'meter':
      return new Meter(rng, startTodS);
  }
}
