import { spawn } from 'node:child_process';

/**
 * curl (a client nobody here wrote) for the HTTP ingest tests: its answers parsed, status, headers,
 * JSON body and how many TCP connections it opened.
 */

export interface CurlAnswer {
  status: number;
  body: Record<string, unknown>;
  headers: string;
  /** New TCP connections curl made, over all its requests. */
  connects: number;
}

/** Options every request of a curl run gets (curl forgets them at `--next`). */
const CURL_COMMON = ['-sS', '--max-time', '20', '-D', '-', '-w', '\n@@%{http_code} %{num_connects}\n'];

/**
 * curl, bounded (its own --max-time, and killed past it): one or more requests in one run, which
 * reuses its connection when the server keeps it alive.
 */
export function curl(...requests: string[][]): Promise<CurlAnswer[]> {
  const args = requests.flatMap((r, i) => [...(i > 0 ? ['--next'] : []), ...CURL_COMMON, ...r]);
  return new Promise((resolve, reject) => {
    const child = spawn('curl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const killer = setTimeout(() => child.kill('SIGKILL'), 25_000);
    // 'close', not 'exit': the pipes may still hold output when the process has exited.
    child.once('close', (code) => {
      clearTimeout(killer);
      if (code !== 0) return reject(new Error(`curl exited ${code}: ${err}`));
      const answers: CurlAnswer[] = [];
      const chunks = out.split('\n@@');
      let rest = chunks[0]!;
      try {
        for (let i = 1; i < chunks.length; i++) {
          const [line = '', ...next] = chunks[i]!.split('\n');
          const [status, connects] = line.split(' ').map(Number) as [number, number];
          // Header blocks, interim ones (100 Continue) first, then the body.
          const blocks = rest.split('\r\n\r\n');
          let heads = 1;
          while (heads < blocks.length - 1 && /^HTTP\/[\d.]+ 1\d\d/.test(blocks[heads - 1]!)) heads++;
          const text = blocks.slice(heads).join('\r\n\r\n');
          const headers = blocks.slice(0, heads).join('\r\n\r\n');
          answers.push({ status, connects, headers, body: text === '' ? {} : JSON.parse(text) });
          rest = next.join('\n');
        }
      } catch (parseError) {
        return reject(new Error(`curl's output not understood: ${out}`, { cause: parseError }));
      }
      if (answers.length !== requests.length)
        return reject(
          new Error(`curl gave ${answers.length} answers to ${requests.length} requests: ${out} ${err}`),
        );
      resolve(answers);
    });
  });
}
