import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

/**
 * Who may see the live view. With an OPERATOR_TOKEN configured, only a request carrying it (as
 * `Authorization: Bearer …`, or `?token=…` for EventSource, which cannot set headers); without one,
 * anyone in AUTH_MODE=open and no one in AUTH_MODE=registry (the view shows the whole fleet, so a
 * gateway that authenticates its devices does not show them to anonymous visitors).
 */
export interface LiveAuthOptions {
  authMode: 'registry' | 'open';
  operatorToken: string | undefined;
}

export type LiveAuthResult =
  | { ok: true }
  | {
      ok: false;
      status: 401 | 403;
      code: 'OPERATOR_TOKEN_REQUIRED' | 'OPERATOR_TOKEN_UNSET';
      message: string;
    };

export const TOKEN_QUERY_PARAM = 'token';

/**
 * The token of `Authorization: Bearer <token>`. The scheme is case-insensitive (RFC 9110 §11.1), so
 * `bearer` and `BEARER` count; scheme and token are separated by spaces (1*SP, RFC 9110 §11.4).
 */
export function bearerToken(header: string | undefined): string | undefined {
  const match = header === undefined ? null : /^(\S+) +(\S.*)$/.exec(header);
  if (match === null || match[1]!.toLowerCase() !== 'bearer') return undefined;
  return match[2]!.trim();
}

const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();

export function createLiveAuth(
  options: LiveAuthOptions,
): (headers: IncomingHttpHeaders, url: URL) => LiveAuthResult {
  // Compared as digests: equal lengths for timingSafeEqual, and the length of the token does not leak.
  const expected = options.operatorToken === undefined ? undefined : digest(options.operatorToken);
  return (headers, url) => {
    if (expected === undefined) {
      if (options.authMode === 'open') return { ok: true };
      return {
        ok: false,
        status: 403,
        code: 'OPERATOR_TOKEN_UNSET',
        message:
          'the live view is off in AUTH_MODE=registry until OPERATOR_TOKEN is set in the gateway configuration',
      };
    }
    const given = bearerToken(headers.authorization) ?? url.searchParams.get(TOKEN_QUERY_PARAM) ?? undefined;
    if (given !== undefined && timingSafeEqual(digest(given), expected)) return { ok: true };
    return {
      ok: false,
      status: 401,
      code: 'OPERATOR_TOKEN_REQUIRED',
      message: `the live view needs the operator token: open /?${TOKEN_QUERY_PARAM}=<OPERATOR_TOKEN>, or send Authorization: Bearer <OPERATOR_TOKEN>`,
    };
  };
}
