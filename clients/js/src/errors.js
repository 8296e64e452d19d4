/**
 * Every failure the client reports, whether the server sent it
 * (`{type:'error',code,message,ref}`) or the client detected it.
 *
 * Server codes: bad_request, unauthorized, forbidden, not_found,
 * session_full, rate_limited, unavailable, internal.
 * Client codes: timeout (no reply in time), disconnected (the connection
 * dropped before the reply), not_connected (request made while not open),
 * protocol (the server sent something that is not a JSON object),
 * token_unavailable (the token provider failed), reconnect_failed
 * (reconnection attempts exhausted).
 */
export class PresenceError extends Error {
	constructor(code, message, { ref, sessionId, cause } = {}) {
		super(message, cause === undefined ? undefined : { cause });
		this.name = 'PresenceError';
		this.code = code;
		if (ref !== undefined) this.ref = ref;
		if (sessionId !== undefined) this.sessionId = sessionId;
	}
}

/** Server errors that another attempt of the same request cannot fix. */
const PERMANENT_CODES = new Set(['bad_request', 'unauthorized', 'forbidden', 'not_found']);

export function isPermanent(error) {
	return error instanceof PresenceError && PERMANENT_CODES.has(error.code);
}
