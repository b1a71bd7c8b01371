import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): self time by function and by package.
 * `tsx bench/cpuprofile-top.ts <file.cpuprofile> [top]`, or called by the benches after a profiled
 * run.
 */
interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  name: string;
  ms: number;
  share: number;
}

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Where a frame's code comes from: an npm package, a repo folder, node itself, or V8's pseudo-frames. */
function origin(frame: CallFrame): string {
  const url = frame.url;
  if (url === '') return frame.functionName.startsWith('(') ? frame.functionName : '(native)';
  if (url.startsWith('node:')) return 'node internals';
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  const nm = path.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = path.slice(nm + '/node_modules/'.length).split('/');
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  if (path.startsWith(REPO_ROOT)) {
    const rel = path.slice(REPO_ROOT.length);
    return rel.includes('/') ? `${rel.slice(0, rel.lastIndexOf('/'))}/` : rel;
  }
  return path;
}

function frameName(frame: CallFrame): string {
  const fn = frame.functionName || '(anonymous)';
  if (frame.url === '') return fn;
  const path = frame.url.startsWith('file://') ? fileURLToPath(frame.url) : frame.url;
  const short = path.startsWith(REPO_ROOT) ? path.slice(REPO_ROOT.length) : path;
  // tsx emits each module on very few lines, so the column is what locates a function.
  return `${fn}  ${short}:${frame.lineNumber + 1}:${frame.columnNumber + 1}`;
}

export interface Summary {
  total: number;
  /** Self time by function. */
  functions: SelfTime[];
  /** Self time by package or repo folder. */
  origins: SelfTime[];
  /** Self plus callees' time by function, counted once per sample however deep the recursion. */
  inclusive: SelfTime[];
}

export function summarise(profile: CpuProfile): Summary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  const parentOf = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);
  const fnMs = new Map<string, number>();
  const originMs = new Map<string, number>();
  const inclusiveMs = new Map<string, number>();
  let total = 0;
  // timeDeltas[i + 1] is the time until the next sample: the time spent where sample i was taken.
  for (let i = 0; i < profile.samples.length; i++) {
    const frame = byId.get(profile.samples[i]!);
    const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    if (frame === undefined || ms <= 0) continue;
    total += ms;
    const fn = frameName(frame);
    fnMs.set(fn, (fnMs.get(fn) ?? 0) + ms);
    const from = origin(frame);
    originMs.set(from, (originMs.get(from) ?? 0) + ms);
    const onStack = new Set<string>();
    for (let id: number | undefined = profile.samples[i]; id !== undefined; id = parentOf.get(id)) {
      const f = byId.get(id);
      if (f === undefined || f.url === '' || f.url.startsWith('node:')) continue;
      onStack.add(frameName(f));
    }
    for (const name of onStack) inclusiveMs.set(name, (inclusiveMs.get(name) ?? 0) + ms);
  }
  const ranked = (m: Map<string, number>) =>
    [...m].map(([name, ms]) => ({ name, ms, share: total > 0 ? ms / total : 0 })).sort((a, b) => b.ms - a.ms);
  return { total, functions: ranked(fnMs), origins: ranked(originMs), inclusive: ranked(inclusiveMs) };
}

/** The main thread's profile among those written into `dir` since `since` (ms since the epoch). */
export function newestProfile(dir: string, since: number): string | undefined {
  // --cpu-prof writes one file per thread (tsx's loader hooks run on one); the main thread's is the largest.
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => ({ path: join(dir, f), stat: statSync(join(dir, f)) }))
    .filter((f) => f.stat.mtimeMs >= since)
    .sort((a, b) => b.stat.size - a.stat.size);
  return files[0]?.path;
}

export function formatSummary(file: string, top = 25): string {
  const { total, functions, origins, inclusive } = summarise(
    JSON.parse(readFileSync(file, 'utf8')) as CpuProfile,
  );
  const pct = (s: number) => `${(s * 100).toFixed(1).padStart(5)}%`;
  // Idle is time the main thread waited for I/O: shares of busy time say more than shares of wall time.
  const idle = functions.find((f) => f.name === '(idle)')?.ms ?? 0;
  const busy = total - idle;
  const lines = [
    `${file}: ${(total / 1000).toFixed(1)} s sampled, ${(busy / 1000).toFixed(1)} s busy (${pct(busy / total).trim()} of wall time on the main thread)`,
    '',
    'self time by origin (share of busy time):',
    ...origins
      .filter((o) => o.name !== '(idle)')
      .slice(0, 15)
      .map((o) => `  ${pct(o.ms / busy)}  ${(o.ms / 1000).toFixed(2).padStart(7)} s  ${o.name}`),
    '',
    `top ${top} functions by self time (share of busy time):`,
    ...functions
      .filter((f) => f.name !== '(idle)')
      .slice(0, top)
      .map((f) => `  ${pct(f.ms / busy)}  ${(f.ms / 1000).toFixed(2).padStart(7)} s  ${f.name}`),
    '',
    `top ${top} JavaScript functions by total time, callees included (share of busy time):`,
    ...inclusive
      .slice(0, top)
      .map((f) => `  ${pct(f.ms / busy)}  ${(f.ms / 1000).toFixed(2).padStart(7)} s  ${f.name}`),
  ];
  return lines.join('\n');
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [file, top] = process.argv.slice(2);
  if (file === undefined) {
    console.error('usage: tsx bench/cpuprofile-top.ts <file.cpuprofile> [top]');
    process.exit(2);
  }
  console.log(formatSummary(file, top === undefined ? 25 : Number(top)));
}
