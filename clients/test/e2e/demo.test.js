// The demo page in headless Chromium against the real server: two browser
// contexts are two users. Screenshots of each step go to clients/artifacts/.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { markerOf, openDemo as openDemoPage, participant, pointAt, withDemoServer } from '../support/browser.js';
import { artifacts } from '../support/cluster.js';

const AWAY_SECONDS = 3;

let cluster;
let browser;
let alice;
let bob;
let sessionId;

withDemoServer('e2e', async (ready) => {
	({ cluster, browser, alice, bob } = ready);
	sessionId = await cluster.createSession('demo', alice, [{ user: bob, role: 'operator' }]);
});

// Uncaught exceptions in any demo page; each test ends by checking there were none.
const pageErrors = [];

const openDemo = (user, awaySeconds) => openDemoPage(browser, cluster, { user, sessionId, awaySeconds, errors: pageErrors });

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
