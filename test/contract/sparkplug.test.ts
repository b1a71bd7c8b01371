import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  deviceTopic,
  isMetricName,
  nodeTopic,
  parseSparkplugTopic,
  sparkplugIdProblem,
  sparkplugMetricName,
} from '../../contract/index.js';

describe('Sparkplug topics', () => {
  it('parses node, device and STATE topics', () => {
    expect(parseSparkplugTopic('spBv1.0/plant-1/NBIRTH/edge-1')).toEqual({
      kind: 'node',
      type: 'NBIRTH',
      groupId: 'plant-1',
      edgeNodeId: 'edge-1',
    });
    expect(parseSparkplugTopic('spBv1.0/plant 1/DDATA/edge-1/pump-2')).toEqual({
      kind: 'device',
      type: 'DDATA',
      groupId: 'plant 1',
      edgeNodeId: 'edge-1',
      deviceId: 'pump-2',
    });
    expect(parseSparkplugTopic('spBv1.0/STATE/scada-1')).toEqual({ kind: 'state', hostId: 'scada-1' });
  });

  it.each([
    'spBv1.0/g/NBIRTH/e/d', // a node message with a device
    'spBv1.0/g/DDATA/e', // a device message without one
    'spBv1.0/g/DATA/e',
    'spBv1.0/g/NDATA/e/d/x',
    'spBv1.0//NDATA/e',
    'spBv1.0/g/NDATA/',
    'spAv1.0/g/NDATA/e',
    'STATE/scada-1', // Sparkplug 2.2's STATE, outside the namespace
    'spBv1.0/STATE',
    'spBv1.0/g/NDATA/e\u0000',
    'devices/d/telemetry',
  ])('refuses %j', (topic) => {
    expect(parseSparkplugTopic(topic)).toBeUndefined();
  });

  it('builds what it parses', () => {
    expect(parseSparkplugTopic(nodeTopic('NCMD', 'g', 'e'))).toMatchObject({ type: 'NCMD', edgeNodeId: 'e' });
    expect(parseSparkplugTopic(deviceTopic('DCMD', 'g', 'e', 'd'))).toMatchObject({
      type: 'DCMD',
      deviceId: 'd',
    });
  });

  it('takes device and edge ids only as canonical device ids, and group ids as label values', () => {
    expect(sparkplugIdProblem('device', 'pump-2')).toBeUndefined();
    expect(sparkplugIdProblem('device', 'Pump 2')).toMatch(/outside/);
    expect(sparkplugIdProblem('device', 'a.b')).toMatch(/outside/);
    expect(sparkplugIdProblem('edge', 'x'.repeat(65))).toMatch(/outside/);
    expect(sparkplugIdProblem('group', 'Plant 1 - Hall B')).toBeUndefined();
    expect(sparkplugIdProblem('group', 'a\tb')).toMatch(/control/);
    expect(sparkplugIdProblem('group', 'g'.repeat(129))).toMatch(/1 to 128/);
  });
});

describe('Sparkplug metric names', () => {
  it.each([
    ['Inputs/Temperature', 'Inputs.Temperature'],
    ['Properties/Hardware Make', 'Properties.Hardware_Make'],
    ['temperature', 'temperature'],
    ['motor-1/rpm_avg', 'motor-1.rpm_avg'],
    ['a.b', 'a.b'],
  ])('maps %j to %j', (name, mapped) => {
    expect(sparkplugMetricName(name)).toBe(mapped);
  });

  it.each([
    '',
    '/Inputs/Temperature',
    'Inputs/',
    'Inputs//Temperature',
    'Temperature (°C)',
    'Température',
    'a:b',
    'x'.repeat(65),
    '__proto__',
    'constructor',
  ])('refuses %j', (name) => {
    expect(sparkplugMetricName(name)).toBeUndefined();
  });

  it('gives only names of the contract grammar', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (name) => {
        const mapped = sparkplugMetricName(name);
        if (mapped !== undefined) expect(isMetricName(mapped)).toBe(true);
      }),
    );
  });
});
