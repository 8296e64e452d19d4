// Headless Chromium (Debian's /usr/bin/chromium through playwright-core)
// and the demo page served by the real server, for the e2e tests.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before } from 'node:test';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { artifacts, repoRoot, startCluster } from './cluster.js';

export const STEP_TIMEOUT_MS = 20_000;

// Nothing here changes how Chromium opens WebSockets: it offers
// permessage-deflate as any user's browser does.
const CHROMIUM_ARGS = [
	'--no-sandbox',
	'--disable-gpu',
	'--disable-quic',
	'--no-first-run',
	'--disable-background-networking',
	'--disable-component-update',
	'--disable-sync',
];

/** launch() gives the browser a fresh temporary profile (user-data-dir) every time. */
function launchChromium() {
	return chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
}

/** The demo page and the client modules it imports, in a new directory to serve as presence.static_dir. */
async function assembleDemo() {
	const dir = await mkdtemp(path.join(os.tmpdir(), 'presence-demo-'));
	await promisify(execFile)('bash', [path.join(repoRoot, 'demo/assemble.sh'), dir]);
	return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * The hooks of a browser test file: before it, the demo page assembled
 * (`prepare(demo)` may add files) and served by a cluster of its own
 * (`name`, default settings but `presence.static_dir`), users Alice and
 * Bob, Chromium; after each test its browser contexts closed, so pages of
 * a failed test do not stay connected into the next; after all, everything
 * removed. `ready({ demo, cluster, browser, alice, bob })` (awaited) hands them
 * over and may prepare more.
 */
export function withDemoServer(name, ready, { prepare } = {}) {
	let demo;
	let cluster;
	let browser;
	before(async () => {
		demo = await assembleDemo();
		if (prepare) await prepare(demo);
		await mkdir(artifacts, { recursive: true });
		cluster = await startCluster(name, { 'presence.static_dir': demo.dir });
		const alice = await cluster.createUser('Alice');
		const bob = await cluster.createUser('Bob');
		browser = await launchChromium();
		await ready({ demo, cluster, browser, alice, bob });
	});
	afterEach(async () => {
		for (const context of browser.contexts()) await context.close();
	});
	after(async () => {
		await browser?.close();
		await cluster?.destroy();
		await demo?.remove();
	});
}

/**
 * `user`'s demo page for `sessionId` in a new browser context. Uncaught
 * exceptions go to `errors`; every WebSocket the page opens to `sockets`,
 * and when `handshakes` is given, the headers of every WebSocket
 * handshake response (lower-case names) to it.
 */
export async function openDemo(browser, cluster, { user, sessionId, awaySeconds = 600, errors = [], sockets = [], handshakes, initScript }) {
	const context = await browser.newContext({ viewport: { width: 1280, height: 760 } });
	const page = await context.newPage();
	page.setDefaultTimeout(STEP_TIMEOUT_MS);
	page.on('pageerror', (error) => errors.push(`${user.username}: ${error.message}`));
	page.on('websocket', (socket) => sockets.push(socket));
	if (handshakes) await recordHandshakes(page, handshakes);
	if (initScript) await page.addInitScript(initScript);
	const query = new URLSearchParams({ session: sessionId, token: user.token, away: String(awaySeconds) });
	await page.goto(`${cluster.httpUrl}/?${query}`);
	return page;
}

export const participant = (page, user) => page.locator(`[data-testid="participant"][data-user-id="${user.id}"]`);
export const markerOf = (page, user) => page.locator(`[data-testid="cursor-marker"][data-user-id="${user.id}"]`);
export const connectionOpen = (page) => page.locator('[data-testid="connection-state"][data-state="open"]');

/** Moves the pointer to `share` (0…1) of timeline event `eventId`. */
export async function pointAt(page, eventId, share, steps = 4) {
	const box = await page.locator(`[data-testid="timeline-event"][data-event-id="${eventId}"]`).boundingBox();
	await page.mouse.move(box.x + box.width * share, box.y + box.height / 2, { steps });
}

/** Pushes the headers of every WebSocket handshake response of `page` (names lower-cased) to `into`. */
export async function recordHandshakes(page, into) {
	const cdp = await page.context().newCDPSession(page);
	cdp.on('Network.webSocketHandshakeResponseReceived', ({ response }) =>
		into.push(Object.fromEntries(Object.entries(response.headers).map(([name, value]) => [name.toLowerCase(), value]))),
	);
	await cdp.send('Network.enable');
}
