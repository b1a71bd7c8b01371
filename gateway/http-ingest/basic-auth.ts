/** HTTP Basic credentials [RFC 7617]: the user id and the password's bytes. */
export interface BasicCredentials {
  username: string;
  password: Buffer;
}

/**
 * The credentials of an `Authorization: Basic …` header, or undefined for any other or a malformed
 * one. The user id ends at the first colon [RFC 7617 2]; the password may hold colons.
 */
export function parseBasicAuth(header: string | undefined): BasicCredentials | undefined {
  if (header === undefined) return undefined;
  const match = /^basic[ \t]+([A-Za-z0-9+/]+={0,2})[ \t]*$/i.exec(header);
  if (match === null) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64');
  const colon = decoded.indexOf(0x3a);
  if (colon < 0) return undefined;
  return { username: decoded.subarray(0, colon).toString('utf8'), password: decoded.subarray(colon + 1) };
}
