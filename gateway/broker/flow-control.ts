import type { PausableClient } from './aedes-internals.js';

/** A connection's publishes in flight, and whether its reading is paused for them (ConnectionState). */
export interface InFlight {
  inFlight: number;
  paused: boolean;
}

export type Done = (err?: Error | null) => void;

/**
 * Counts a publish in flight until `done`, and stops reading the connection while `max`
 * (MAX_IN_FLIGHT_PER_CLIENT) are: aedes alone reads on whenever more bytes arrive, so a device
 * publishing into a NATS outage (or over its rate) would otherwise pile up held publishes without
 * bound. Paused, TCP pushes back on the device; reading resumes once half of them are answered.
 * Returns the `done` to call instead, which answers at most once. `reached` is called as the bound
 * pauses the connection.
 */
export function holdInFlight(
  client: PausableClient,
  state: InFlight | undefined,
  max: number,
  reached: () => void,
  done: Done,
): Done {
  if (state === undefined || client.closed) return done;
  state.inFlight++;
  if (state.inFlight >= max && !state.paused) {
    state.paused = true;
    reached();
    client.pause();
  }
  let once = false;
  return (err) => {
    if (once) return;
    once = true;
    state.inFlight--;
    if (state.paused && state.inFlight <= max / 2) {
      state.paused = false;
      if (!client.closed) client.resume();
    }
    done(err);
  };
}
