const decoder = new TextDecoder();

/** A NATS message body as JSON, or undefined when it is not JSON: the schema check says the rest. */
export function parseJson(raw: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(raw));
  } catch {
    return undefined;
  }
}

/** Moves `key` to the most recent end of an insertion-ordered map (the oldest is dropped first). */
export function touch<K, V>(map: Map<K, V>, key: K, value: V): void {
  map.delete(key);
  map.set(key, value);
}
