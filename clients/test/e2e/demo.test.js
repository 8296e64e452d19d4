// The demo page in headless Chromium against the real server: two browser
// contexts are two users. Screenshots of each step go to clients/artifacts/.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { artifacts, repoRoot, startCluster } from '../support/cluster.js';

const AWAY_SECONDS = 3;
const STEP_TIMEOUT_MS = 20_000;
const CHROMIUM_ARGS = [
	'--no-sandbox',
	'--disable-gpu',
	'--disable-quic',
	'--no-first-run',
	'--disable-background-networking',
	'--disable-component-update',
	'--disable-sync',
];

let staticDir;
let cluster;
let browser;
let alice;
let bob;
let sessionId;

before(async () => {
	staticDir = await mkdtemp(path.join(os.tmpdir(), 'presence-demo-'));
	await promisify(execFile)('bash', [path.join(repoRoot, 'demo/assemble.sh'), staticDir]);
	await mkdir(artifacts, { recursive: true });
	cluster = await startCluster('e2e', { 'presence.static_dir': staticDir });
	alice = await cluster.createUser('Alice');
	bob = await cluster.createUser('Bob');
	sessionId = await cluster.createSession('demo', alice, [{ user: bob, role: 'operator' }]);
	// launch() gives the browser a fresh temporary profile (user-data-dir) every time.
	browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
});

// Pages of a failed test would otherwise stay connected into the next one.
afterEach(async () => {
	for (const context of browser.contexts()) await context.close();
});

after(async () => {
	await browser?.close();
	await cluster?.destroy();
	if (staticDir) await rm(staticDir, { recursive: true, force: true });
});

// Uncaught exceptions in any demo page; each test ends by checking there were none.
const pageErrors = [];

async function openDemo(user, awaySeconds) {
	const context = await browser.newContext({ viewport: { width: 1280, height: 760 } });
	const page = await context.newPage();
	page.setDefaultTimeout(STEP_TIMEOUT_MS);
	page.on('pageerror', (error) => pageErrors.push(`${user.username}: ${error.message}`));
	const query = new URLSearchParams({ session: sessionId, token: user.token, away: String(awaySeconds) });
	await page.goto(`${cluster.httpUrl}/?${query}`);
	return page;
}

const participant = (page, user) => page.locator(`[data-testid="participant"][data-user-id="${user.id}"]`);
const markerOf = (page, user) => page.locator(`[data-testid="cursor-marker"][data-user-id="${user.id}"]`);

async function pointAt(page, eventId, share) {
	const box = await page.locator(`[data-testid="timeline-event"][data-event-id="${eventId}"]`).boundingBox();
	await page.mouse.move(box.x + box.width * share, box.y + box.height / 2, { steps: 4 });
}

test('two users see each other\'s cursor, away status and departure', { timeout: 120_000 }, async () => {
	const pageA = await openDemo(alice, AWAY_SECONDS);
	const pageB = await openDemo(bob, 600);
	await pageA.locator('[data-testid="connection-state"][data-state="open"]').waitFor();
	await pageB.locator('[data-testid="connection-state"][data-state="open"]').waitFor();
	await participant(pageB, alice).and(pageB.locator('[data-status="online"]')).waitFor();
	await participant(pageA, bob).and(pageA.locator('[data-status="online"]')).waitFor();
	await pageB.screenshot({ path: path.join(artifacts, '1-both-online.png') });

	// A moves over the timeline; B's marker for A follows.
	await pointAt(pageA, 'e3', 0.5);
	await markerOf(pageB, alice).and(pageB.locator('[data-event-id="e3"]')).waitFor();
	await pointAt(pageA, 'e8', 0.25);
	const moved = markerOf(pageB, alice).and(pageB.locator('[data-event-id="e8"]'));
	await moved.waitFor();
	assert.ok(Math.abs(Number(await moved.getAttribute('data-position')) - 25) <= 10, 'the marker sits where A points');
	await pointAt(pageB, 'e5', 0.6);
	await pageB.locator('[data-testid="comment-input"]').fill('The import numbers match.');
	await pageB.locator('[data-testid="comment-button"]').click();
	await pageA.locator('[data-testid="feed-item"][data-kind="comment"]', { hasText: 'The import numbers match.' }).waitFor();
	await pageB.screenshot({ path: path.join(artifacts, '2-cursor-moved.png') });

	// A stops touching anything: after AWAY_SECONDS B sees A away, and A's next move brings A back.
	const aliceAway = participant(pageB, alice).and(pageB.locator('[data-status="away"]'));
	await aliceAway.waitFor();
	assert.equal(await aliceAway.locator('[data-testid="status-badge"]').textContent(), 'away');
	await pageB.screenshot({ path: path.join(artifacts, '3-alice-away.png') });
	await pointAt(pageA, 'e2', 0.5);
	await participant(pageB, alice).and(pageB.locator('[data-status="online"]')).waitFor();

	// A closes the page: B sees A leave and A's marker disappear.
	await pageA.context().close();
	await participant(pageB, alice).and(pageB.locator('[data-status="offline"]')).waitFor();
	await pageB.locator('[data-testid="feed-item"][data-kind="leave"]', { hasText: 'Alice left' }).waitFor();
	assert.equal(await markerOf(pageB, alice).count(), 0);
	await pageB.screenshot({ path: path.join(artifacts, '4-alice-left.png') });
	assert.deepEqual(pageErrors, []);
});

test('the page shows reconnecting while the server restarts, then carries on', { timeout: 120_000 }, async () => {
	const page = await openDemo(bob, 600);
	await participant(page, bob).and(page.locator('[data-status="online"]')).waitFor();
	const restarted = cluster.restart();
	await page.locator('[data-testid="connection-state"][data-state="reconnecting"]').waitFor();
	assert.match(await page.locator('[data-testid="banner"]').textContent(), /Reconnecting/);
	await page.screenshot({ path: path.join(artifacts, '5-reconnecting.png') });
	await restarted;
	await page.locator('[data-testid="connection-state"][data-state="open"]').waitFor({ timeout: 60_000 });
	await participant(page, bob).and(page.locator('[data-status="online"]')).waitFor();
	await page.locator('[data-testid="comment-button"]').click();
	await page.locator('[data-testid="feed-item"][data-kind="comment"]').first().waitFor();
	assert.equal(await page.locator('[data-testid="banner"]').isHidden(), true);
	assert.deepEqual(pageErrors, []);
});
