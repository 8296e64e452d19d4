export { PresenceClient, ConnectionState } from './client.js';
export { PresenceError } from './errors.js';
export { DEFAULT_RECONNECT, reconnectDelay } from './backoff.js';
export { systemClock } from './clock.js';
export { applyPresenceEvent } from './users.js';
