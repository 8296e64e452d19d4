/**
 * Users maps are replaced, never modified, so a map handed out once (to a
 * listener, to React) stays a consistent snapshot.
 */
export const NO_USERS = new Map();

export function usersFromList(list) {
	const users = new Map();
	for (const user of Array.isArray(list) ? list : []) {
		if (isPresenceData(user)) users.set(user.userId, user);
	}
	return users;
}

/**
 * The users map after one presence event: `join`, `update` and `cursor`
 * carry the user's current PresenceData; `leave` removes the user;
 * `timeout` keeps the user, offline, since the same connection may come
 * back with a `join`. Unknown kinds (a later protocol addition) change
 * nothing.
 */
export function applyPresenceEvent(users, { kind, user }) {
	if (!isPresenceData(user)) return users;
	const previous = users.get(user.userId);
	const next = new Map(users);
	switch (kind) {
		case 'join':
		case 'update':
		case 'cursor':
			next.set(user.userId, { ...previous, ...user });
			return next;
		case 'timeout':
			next.set(user.userId, { ...previous, ...user, status: 'offline' });
			return next;
		case 'leave':
			next.delete(user.userId);
			return next;
		default:
			return users;
	}
}

function isPresenceData(user) {
	return user !== null && typeof user === 'object' && typeof user.userId === 'string';
}
