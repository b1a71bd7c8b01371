export * from './commands.js';
export * from './device-payload.js';
export * from './event.js';
export * from './ids.js';
export * from './measurements.js';
export * from './subjects.js';
export * from './topics.js';
export * from './units.js';
