import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { z } from 'zod';
import { ConfigError, env, loadConfig } from '../common/config.js';
import type { DeviceRecord, GatewayRole } from '../contract/devices.js';
import { DeviceRegistry, RegistryError } from './registry/device-registry.js';

const USAGE = `usage: npm run devices -- <command> [options]

  add <id> --tenant <t> [--secret <s>] [--label k=v]... [--gateway | --children a,b,c] [--json]
                         register a device; prints its secret once (generated unless --secret).
                         --gateway: it may publish for any device of its tenant (one not yet
                         registered is, with label via=<id>); --children: for those devices only
  list [--json]          all devices (never their secrets)
  disable <id>           refuse and disconnect the device on every gateway
  enable <id>            accept it again
  rotate <id> [--secret <s>] [--json]
                         new secret; connected sessions are closed
  remove <id>            delete the device

NATS from NATS_URL (default nats://127.0.0.1:4222).`;

class UsageError extends Error {}

function labelsOf(values: string[] | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const pair of values ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--label expects key=value, got '${pair}'`);
    labels[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return labels;
}

/** `--gateway` or `--children a,b,c` (not both): the device's gateway role, if any. */
function gatewayRoleOf(gateway: boolean, children: string | undefined): GatewayRole | undefined {
  if (gateway && children !== undefined) throw new UsageError('--gateway and --children exclude each other');
  if (gateway) return { children: 'any' };
  if (children === undefined) return undefined;
  const ids = children
    .split(',')
    .map((c) => c.trim())
    .filter((c) => c.length > 0);
  if (ids.length === 0) throw new UsageError('--children expects a comma-separated list of device ids');
  return { children: ids };
}

function publicView(r: DeviceRecord) {
  return {
    id: r.id,
    tenant: r.tenant,
    labels: r.labels,
    disabled: r.disabled,
    ...(r.gateway ? { gateway: r.gateway } : {}),
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  };
}

async function run(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      tenant: { type: 'string' },
      secret: { type: 'string' },
      label: { type: 'string', multiple: true },
      gateway: { type: 'boolean', default: false },
      children: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const [command, id] = positionals;
  if (values.help || command === undefined) {
    console.log(USAGE);
    return;
  }
  const needsId = ['add', 'disable', 'enable', 'rotate', 'remove'];
  if (needsId.includes(command) && id === undefined) throw new UsageError(`${command} needs a device id`);
  if (!needsId.includes(command) && command !== 'list') throw new UsageError(`unknown command '${command}'`);
  if (command === 'add' && values.tenant === undefined) throw new UsageError('add needs --tenant');
  const labels = labelsOf(values.label);
  const gateway = gatewayRoleOf(values.gateway ?? false, values.children);
  if (gateway !== undefined && command !== 'add')
    throw new UsageError('--gateway and --children go with add');

  const { NATS_URL } = loadConfig(z.object({ NATS_URL: env.natsUrl() }));
  const nc = await connect({ servers: NATS_URL.split(','), name: 'devices-cli', timeout: 5_000 });
  try {
    const registry = await DeviceRegistry.open(nc);
    switch (command) {
      case 'add': {
        const { record, secret } = await registry.add({
          id: id!,
          tenant: values.tenant!,
          secret: values.secret,
          labels,
          ...(gateway ? { gateway } : {}),
        });
        if (values.json) console.log(JSON.stringify({ ...publicView(record), secret }));
        else
          console.log(
            `added ${record.id} (tenant ${record.tenant})\nsecret: ${secret}\n(shown once: store it now)`,
          );
        break;
      }
      case 'list': {
        const all = (await registry.list()).map(publicView);
        if (values.json) console.log(JSON.stringify(all));
        else if (all.length === 0) console.log('no devices');
        else {
          for (const d of all) {
            const labelText = Object.entries(d.labels)
              .map(([k, v]) => `${k}=${v}`)
              .join(',');
            const role =
              d.gateway === undefined
                ? ''
                : d.gateway.children === 'any'
                  ? 'gateway'
                  : `gateway of ${d.gateway.children.join(',')}`;
            console.log([d.id, d.tenant, d.disabled ? 'disabled' : 'enabled', labelText, role].join('\t'));
          }
        }
        break;
      }
      case 'disable':
      case 'enable': {
        const record = await registry.setDisabled(id!, command === 'disable');
        console.log(values.json ? JSON.stringify(publicView(record)) : `${record.id} ${command}d`);
        break;
      }
      case 'rotate': {
        const { record, secret } = await registry.rotate(id!, values.secret);
        if (values.json) console.log(JSON.stringify({ ...publicView(record), secret }));
        else console.log(`rotated ${record.id}\nsecret: ${secret}\n(shown once: store it now)`);
        break;
      }
      case 'remove':
        await registry.remove(id!);
        console.log(values.json ? JSON.stringify({ removed: id }) : `removed ${id}`);
        break;
    }
  } finally {
    await nc.close();
  }
}

run(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) console.error(`devices: ${err.message}\n\n${USAGE}`);
  else if (err instanceof RegistryError || err instanceof ConfigError)
    console.error(`devices: ${err.message}`);
  else console.error(`devices: ${(err as Error).message}`);
  process.exit(err instanceof UsageError ? 64 : 1);
});
