import type { Client } from 'aedes';
import { generate, parser as mqttParser } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import {
  countCompletionsWhilePaused,
  limitFrameSizes,
  pausable,
  sentDisconnect,
} from '../../../gateway/broker/aedes-internals.js';

/** The members of an aedes client countCompletionsWhilePaused touches, as a plain object. */
function batchingClient() {
  const reads: (Error | null | undefined)[] = [];
  return {
    reads,
    _paused: false,
    _parsingBatch: 0,
    _nextBatch(err?: Error | null) {
      reads.push(err);
    },
  };
}

describe('countCompletionsWhilePaused', () => {
  it('counts completions while paused without reading, and reads as before otherwise', () => {
    const c = batchingClient();
    countCompletionsWhilePaused(c as unknown as Client);
    c._parsingBatch = 3;
    c._paused = true;
    c._nextBatch();
    c._nextBatch(null);
    expect(c._parsingBatch).toBe(1);
    expect(c.reads).toEqual([]);
    c._paused = false;
    c._nextBatch();
    expect(c.reads).toEqual([undefined]);
  });

  it('never counts below zero, and lets an error through while paused', () => {
    const c = batchingClient();
    countCompletionsWhilePaused(c as unknown as Client);
    c._paused = true;
    c._nextBatch();
    expect(c._parsingBatch).toBe(0);
    const err = new Error('boom');
    c._nextBatch(err);
    expect(c.reads).toEqual([err]);
  });
});

describe('limitFrameSizes', () => {
  /** A real mqtt-packet parser behind a stand-in client, and what it emitted. */
  function guardedParser(maxConnectBytes: number, maxPacketBytes: number) {
    const parser = mqttParser();
    const packets: string[] = [];
    const errors: string[] = [];
    const exceeded: string[] = [];
    parser.on('packet', (p) => packets.push(p.cmd));
    parser.on('error', (e) => errors.push(e.message));
    limitFrameSizes({ _parser: parser } as unknown as Client, {
      maxConnectBytes,
      maxPacketBytes,
      exceeded: (setting) => exceeded.push(setting),
    });
    return { parser, packets, errors, exceeded };
  }

  const connect = (clientId: string) =>
    generate({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      clientId,
      keepalive: 60,
    });
  const publish = (bytes: number) =>
    generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(bytes), qos: 0, retain: false, dup: false });

  it('passes frames within their bounds', () => {
    const p = guardedParser(100, 1_000);
    p.parser.parse(Buffer.concat([connect('dev-1'), publish(900)]));
    expect(p.packets).toEqual(['connect', 'publish']);
    expect(p.errors).toEqual([]);
  });

  it('refuses a CONNECT above MAX_CONNECT_BYTES from its header alone', () => {
    const p = guardedParser(20, 1_000);
    const frame = connect('x'.repeat(50));
    p.parser.parse(frame.subarray(0, 2)); // type and remaining length only
    expect(p.errors).toEqual([`connect of ${frame.length - 2} bytes exceeds MAX_CONNECT_BYTES (20)`]);
    expect(p.exceeded).toEqual(['MAX_CONNECT_BYTES']);
  });

  it('refuses any other frame above MAX_PACKET_BYTES from its header alone', () => {
    const p = guardedParser(100, 1_000);
    const frame = publish(5_000);
    p.parser.parse(frame.subarray(0, 3));
    expect(p.errors).toHaveLength(1);
    expect(p.errors[0]).toMatch(/^publish of \d+ bytes exceeds MAX_PACKET_BYTES \(1000\)$/);
    expect(p.exceeded).toEqual(['MAX_PACKET_BYTES']);
    expect(p.packets).toEqual([]);
  });

  it('does nothing for a client without a parser', () => {
    expect(() =>
      limitFrameSizes({} as Client, { maxConnectBytes: 1, maxPacketBytes: 1, exceeded: () => {} }),
    ).not.toThrow();
  });
});

describe('pausable and sentDisconnect', () => {
  it('read the client as aedes keeps it', () => {
    const client = { _disconnected: true, closed: false, pause() {}, resume() {} } as unknown as Client;
    expect(sentDisconnect(client)).toBe(true);
    expect(sentDisconnect({} as Client)).toBe(false);
    expect(pausable(client)).toBe(client);
  });
});
