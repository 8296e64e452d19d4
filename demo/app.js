// The presence demo page: participants, everyone's cursor on a shared event
// timeline, and a live activity feed, for the session and token in the URL:
//   /?session=demo&token=<jwt>[&away=<seconds>]
import { PresenceClient } from './client/index.js';

const EVENTS = [
	'Kick-off', 'Scope agreed', 'Data import', 'First review', 'Checkpoint',
	'Analysis', 'Findings', 'Draft report', 'Sign-off', 'Close-out',
].map((title, index) => ({ id: `e${index + 1}`, title }));
const MAX_POSITION = 100;
const DEFAULT_AWAY_SECONDS = 120;
const FEED_LIMIT = 200;

const STATE_TEXT = {
	idle: 'Not connected',
	connecting: 'Connecting…',
	open: 'Connected',
	reconnecting: 'Reconnecting…',
	failed: 'Connection failed',
	closed: 'Disconnected',
};

const $ = (selector) => document.querySelector(selector);
const ui = {
	sessionName: $('[data-testid="session-name"]'),
	connection: $('[data-testid="connection-state"]'),
	connectionText: $('[data-role="connection-text"]'),
	banner: $('[data-testid="banner"]'),
	me: $('[data-testid="me"]'),
	meAvatar: $('[data-role="me-avatar"]'),
	meName: $('[data-role="me-name"]'),
	myStatus: $('[data-testid="my-status"]'),
	participantList: $('[data-testid="participant-list"]'),
	participantCount: $('[data-testid="participant-count"]'),
	participantsEmpty: $('[data-role="participants-empty"]'),
	track: $('[data-role="track"]'),
	markers: $('[data-role="markers"]'),
	legend: $('[data-role="legend"]'),
	feed: $('[data-testid="activity-feed"]'),
	commentForm: $('[data-testid="comment-form"]'),
	commentInput: $('[data-testid="comment-input"]'),
	commentButton: $('[data-testid="comment-button"]'),
};

const params = new URLSearchParams(location.search);
const sessionId = params.get('session');
const token = params.get('token');
const awaySeconds = Number(params.get('away')) > 0 ? Number(params.get('away')) : DEFAULT_AWAY_SECONDS;

// Everyone seen in this session, kept after they leave so they show as offline.
const roster = new Map();
let myCursor = null;

renderTimeline();
if (!sessionId || !token) {
	showBanner('Open this page with ?session=<session id>&token=<token>: the demo command prints one such link per demo user.', 'error');
	ui.commentButton.disabled = true;
} else {
	start();
}

function start() {
	ui.sessionName.textContent = sessionId;
	document.title = `presence · ${sessionId}`;
	const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
	const client = new PresenceClient({ url: `${scheme}://${location.host}/ws`, token, awayAfter: awaySeconds * 1000 });

	client.on('state', (change) => renderConnection(change));
	client.on('session', (snapshot) => {
		if (snapshot.sessionId !== sessionId) return;
		// While disconnected the last known presence stays on screen, dimmed.
		document.body.dataset.joined = String(snapshot.joined);
		updateRoster(snapshot.users);
		renderParticipants(client);
		renderMarkers(client);
	});
	client.on('joined', (snapshot) => {
		const others = snapshot.users.size - 1;
		addFeedItem('join', [`You joined as ${snapshot.role ?? 'participant'}`, others > 0 ? ` · ${others} other${others > 1 ? 's' : ''} here` : '']);
	});
	client.on('join', ({ user }) => {
		// Your own join is reported by the joined listener, with the session's head count.
		if (!isMe(client, user)) addFeedItem('join', [strong(user.username), ' joined']);
	});
	client.on('leave', ({ user }) => addFeedItem('leave', [strong(user.username), ' left']));
	client.on('timeout', ({ user }) => addFeedItem('timeout', [strong(user.username), ' timed out']));
	client.on('update', ({ user }) => {
		// Runs before the session listener, so the roster still holds the previous status.
		if (roster.get(user.userId)?.status === user.status) return;
		const [who, is] = isMe(client, user) ? ['You', ' are'] : [user.username, ' is'];
		if (user.status === 'away') addFeedItem('away', [strong(who), `${is} away`]);
		else if (user.status === 'online') addFeedItem('online', [strong(who), `${is} back online`]);
	});
	client.on('activity', ({ activity }) => addActivity(client, activity));
	client.on('broadcast', ({ payload }) => addFeedItem('activity', ['Broadcast: ', JSON.stringify(payload)]));
	client.on('session_ended', ({ status }) => {
		addFeedItem('connection', [`The session ended (${status})`]);
		showBanner(`This session has ended (${status}).`, 'info');
		ui.commentButton.disabled = true;
	});
	client.on('session_removed', () => {
		addFeedItem('connection', ['You were removed from the session']);
		showBanner('You were removed from this session.', 'error');
		ui.commentButton.disabled = true;
	});
	client.on('error', (error) => addFeedItem('error', [`Error: ${error.message}`]));

	ui.track.addEventListener('pointermove', (event) => {
		myCursor = cursorAt(event.clientX);
		client.setCursor(sessionId, myCursor);
		renderMarkers(client);
	});
	ui.commentForm.addEventListener('submit', async (event) => {
		event.preventDefault();
		const text = ui.commentInput.value.trim() || 'Looks good to me.';
		ui.commentButton.disabled = true;
		try {
			await client.logActivity(sessionId, 'comment', { text });
			ui.commentInput.value = '';
		} catch (error) {
			showBanner(`Your comment was not logged: ${error.message}`, 'error');
		} finally {
			ui.commentButton.disabled = false;
		}
	});

	client.connect().catch(() => {
		// The state listener already shows the failure.
	});
	client.join(sessionId).catch((error) => showBanner(`Cannot join session ${sessionId}: ${error.message}`, 'error'));
}

function isMe(client, user) {
	return user.userId === client.user?.userId;
}

function updateRoster(users) {
	for (const [userId, entry] of roster) {
		if (!users.has(userId) && entry.status !== 'offline') roster.set(userId, { ...entry, status: 'offline', cursor: null });
	}
	for (const user of users.values()) roster.set(user.userId, user);
}

// --- rendering --------------------------------------------------------------

function renderConnection({ state, attempt, delay }) {
	ui.connection.dataset.state = state;
	ui.connectionText.textContent = STATE_TEXT[state] ?? state;
	if (state === 'reconnecting') {
		showBanner(`Connection lost. Reconnecting in ${Math.ceil(delay / 1000)} s (attempt ${attempt})…`, 'info');
		addFeedItem('connection', [`Connection lost, reconnecting (attempt ${attempt})`]);
	} else if (state === 'failed') {
		showBanner('Could not reconnect to the server. Reload the page to try again.', 'error');
	} else if (state === 'open') {
		hideBanner();
	}
}

function renderParticipants(client) {
	const me = client.user?.userId;
	const people = [...roster.values()].sort((a, b) => rank(a, me) - rank(b, me) || a.username.localeCompare(b.username));
	ui.participantList.replaceChildren(...people.map((user) => participantItem(user, user.userId === me)));
	ui.participantCount.textContent = String(people.filter((user) => user.status !== 'offline').length);
	ui.participantsEmpty.hidden = people.length > 0;

	const mine = roster.get(me);
	if (mine) {
		ui.me.hidden = false;
		ui.me.style.setProperty('--user-color', colorOf(mine.userId));
		ui.meAvatar.textContent = initials(mine.username);
		ui.meName.textContent = mine.username;
		ui.myStatus.textContent = mine.status;
		ui.myStatus.dataset.status = mine.status;
	}
}

/** You first, then present people, then those who left. */
function rank(user, me) {
	if (user.userId === me) return 0;
	return user.status === 'offline' ? 2 : 1;
}

function participantItem(user, isMine) {
	const item = element('li', { class: 'participant', 'data-testid': 'participant', 'data-user-id': user.userId, 'data-status': user.status });
	item.style.setProperty('--user-color', colorOf(user.userId));
	const name = element('span', { class: 'participant-name', 'data-testid': 'participant-name' }, [
		user.username,
		element('span', { class: 'participant-role' }, [isMine ? `${user.role ?? ''} · you` : (user.role ?? '')]),
	]);
	item.append(
		element('span', { class: 'avatar' }, [initials(user.username)]),
		name,
		element('span', { class: 'badge', 'data-testid': 'status-badge', 'data-status': user.status }, [user.status]),
	);
	return item;
}

function renderTimeline() {
	ui.track.replaceChildren(
		...EVENTS.map((event) =>
			element('div', { class: 'timeline-event', 'data-testid': 'timeline-event', 'data-event-id': event.id, title: event.title }, [
				element('span', { class: 'event-id' }, [event.id]),
				element('span', { class: 'event-title' }, [event.title]),
			]),
		),
	);
}

function renderMarkers(client) {
	const me = client.user?.userId;
	const markers = [];
	for (const user of roster.values()) {
		if (user.userId === me || user.status === 'offline' || !user.cursor) continue;
		markers.push(cursorMarker(user, user.cursor, false));
	}
	const mine = me && roster.get(me);
	if (mine && myCursor) markers.push(cursorMarker(mine, myCursor, true));
	ui.markers.replaceChildren(...markers);
	ui.legend.replaceChildren(
		...markers.map((marker) =>
			element('span', { class: 'legend-item', style: `--user-color: ${marker.style.getPropertyValue('--user-color')}` }, [
				element('span', { class: 'legend-swatch' }),
				`${marker.dataset.username} · ${marker.dataset.eventId}`,
			]),
		),
	);
	for (const cell of ui.track.children) cell.dataset.mine = String(cell.dataset.eventId === myCursor?.eventId);
}

function cursorMarker(user, cursor, isMine) {
	const index = EVENTS.findIndex((event) => event.id === cursor.eventId);
	if (index < 0) return element('span', { hidden: '' });
	const fraction = (index + Math.min(cursor.position, MAX_POSITION) / MAX_POSITION) / EVENTS.length;
	const marker = element('div', {
		class: isMine ? 'cursor-marker mine' : 'cursor-marker',
		'data-testid': isMine ? 'my-cursor' : 'cursor-marker',
		'data-user-id': user.userId,
		'data-username': isMine ? 'You' : user.username,
		'data-event-id': cursor.eventId,
		'data-position': String(cursor.position),
		'data-status': user.status,
	}, [
		element('span', { class: 'cursor-label' }, [isMine ? 'You' : user.username]),
		element('span', { class: 'cursor-stem' }),
	]);
	marker.style.left = `${(fraction * 100).toFixed(2)}%`;
	marker.style.setProperty('--user-color', colorOf(user.userId));
	return marker;
}

/** The timeline cursor under the pointer: the event, and the offset in it from 0 to 100. */
function cursorAt(clientX) {
	const box = ui.track.getBoundingClientRect();
	const scaled = Math.min(Math.max((clientX - box.left) / box.width, 0), 0.99999) * EVENTS.length;
	const index = Math.floor(scaled);
	return { eventId: EVENTS[index].id, position: Math.round((scaled - index) * MAX_POSITION) };
}

function addActivity(client, activity) {
	const author = roster.get(activity.userId);
	const who = activity.userId === client.user?.userId ? 'You' : (author?.username ?? 'Someone');
	if (activity.activityType === 'comment') {
		const text = typeof activity.details?.text === 'string' ? activity.details.text : '';
		addFeedItem('comment', [strong(who), ' commented ', element('span', { class: 'feed-quote' }, [`“${text}”`])]);
	} else {
		addFeedItem('activity', [strong(who), ` logged ${activity.activityType}`]);
	}
}

function addFeedItem(kind, parts) {
	const time = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
	ui.feed.prepend(
		element('li', { class: 'feed-item', 'data-testid': 'feed-item', 'data-kind': kind }, [
			element('span', { class: 'feed-time' }, [time]),
			element('span', { class: 'feed-icon' }),
			element('span', { class: 'feed-text' }, parts),
		]),
	);
	while (ui.feed.children.length > FEED_LIMIT) ui.feed.lastElementChild.remove();
}

function showBanner(text, kind) {
	ui.banner.textContent = text;
	ui.banner.dataset.kind = kind;
	ui.banner.hidden = false;
}

function hideBanner() {
	ui.banner.hidden = true;
}

// --- helpers ----------------------------------------------------------------

function element(tag, attributes = {}, children = []) {
	const node = document.createElement(tag);
	for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
	node.append(...children);
	return node;
}

function strong(text) {
	return element('strong', {}, [text]);
}

function initials(name) {
	return name.split(/[\s._-]+/).filter(Boolean).slice(0, 2).map((part) => part[0].toUpperCase()).join('') || '?';
}

/** A stable, readable colour per user. */
function colorOf(userId) {
	let hash = 0;
	for (const char of userId) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
	return `hsl(${hash % 360} 62% 44%)`;
}
