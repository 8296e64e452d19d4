import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { copyFile, mkdir, mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const clusterScript = path.join(repoRoot, 'test/cluster.sh');
export const artifacts = fileURLToPath(new URL('../../artifacts/', import.meta.url));
const READY_TIMEOUT_MS = 60_000;

/**
 * A throwaway PostgreSQL with the presence extension and its WebSocket
 * worker on 127.0.0.1, made by the project's test/cluster.sh. `settings`
 * are GUCs (`{'presence.heartbeat_interval': '1s'}`). The server log is
 * kept as clients/artifacts/NAME-server.log when the cluster is destroyed.
 */
export async function startCluster(name, settings = {}) {
	const dir = await mkdtemp(path.join(os.tmpdir(), 'presence-clients-'));
	const pgPort = await freePort();
	const wsPort = await freePort();
	const gucs = Object.entries(settings).map(([name, value]) => `${name}=${value}`);
	const cluster = new Cluster(name, dir, wsPort);
	try {
		await cluster.script('start', String(pgPort), String(wsPort), ...gucs);
		await cluster.waitUntilListening();
	} catch (error) {
		await cluster.destroy();
		throw error;
	}
	return cluster;
}

class Cluster {
	constructor(name, dir, wsPort) {
		this.name = name;
		this.dir = dir;
		this.wsPort = wsPort;
		this.httpUrl = `http://127.0.0.1:${wsPort}`;
		this.wsUrl = `ws://127.0.0.1:${wsPort}/ws`;
	}

	async script(command, ...args) {
		const { stdout } = await run('bash', [clusterScript, command, this.dir, ...args], { timeout: 120_000 });
		return stdout;
	}

	/** Runs SQL in the presence database; returns the unaligned output without its trailing newline. */
	async sql(query) {
		return (await this.script('psql', '-v', 'ON_ERROR_STOP=1', '-qtA', '-c', query)).replace(/\n$/, '');
	}

	/** A new user with a one-hour token naming them. */
	async createUser(username) {
		const id = randomUUID();
		await this.sql(`INSERT INTO presence.users(id, username) VALUES (${literal(id)}, ${literal(username)})`);
		const token = await this.sql(`SELECT presence.issue_token(${literal(id)}, '1 hour', ${literal(username)})`);
		return { id, username, token };
	}

	/** A session owned by `owner` with `participants` ([{user, role}]). */
	async createSession(sessionId, owner, participants = []) {
		await this.sql(`SELECT presence.create_session(${literal(owner.id)}, NULL, '{}', NULL, NULL, ${literal(sessionId)})`);
		for (const { user, role } of participants) {
			await this.sql(`SELECT presence.add_participant(${literal(sessionId)}, ${literal(user.id)}, ${literal(role)})`);
		}
		return sessionId;
	}

	/**
	 * The session's rows of presence.activity_log in chain order, as
	 * [{id, userId, activityType, details}], optionally only `types`.
	 */
	async activityLog(sessionId, types = null) {
		const typeFilter = types ? `AND a.activity_type = ANY (ARRAY[${types.map(literal).join(', ')}])` : '';
		const rows = await this.sql(`
			SELECT coalesce(json_agg(json_build_object('id', a.id, 'userId', a.user_id,
					'activityType', a.activity_type, 'details', a.details) ORDER BY a.chain_seq), '[]')
			FROM presence.activity_log a JOIN presence.collaboration_sessions s ON s.id = a.session_id
			WHERE s.session_id = ${literal(sessionId)} ${typeFilter}`);
		return JSON.parse(rows);
	}

	/** presence.broadcast() of `payload` (an object) to the session; returns the connections it reaches. */
	async broadcast(sessionId, payload) {
		return Number(await this.sql(`SELECT presence.broadcast(${literal(sessionId)}, ${literal(JSON.stringify(payload))}::jsonb)`));
	}

	async restart() {
		await this.script('restart');
		await this.waitUntilListening();
	}

	async destroy() {
		await mkdir(artifacts, { recursive: true });
		await copyFile(path.join(this.dir, 'server.log'), path.join(artifacts, `${this.name}-server.log`)).catch(() => {});
		await run('bash', [clusterScript, 'destroy', this.dir], { timeout: 120_000 }).catch(() => {});
	}

	/** The worker starts after the postmaster accepts SQL: wait until its port accepts connections. */
	async waitUntilListening() {
		const deadline = Date.now() + READY_TIMEOUT_MS;
		while (!(await accepts(this.wsPort))) {
			if (Date.now() > deadline) throw new Error(`nothing listens on WebSocket port ${this.wsPort} after ${READY_TIMEOUT_MS} ms`);
			await new Promise((resolve) => setTimeout(resolve, 200));
		}
	}
}

function literal(text) {
	return `'${String(text).replaceAll("'", "''")}'`;
}

function accepts(port) {
	return new Promise((resolve) => {
		const socket = net.connect({ host: '127.0.0.1', port });
		socket.once('connect', () => {
			socket.destroy();
			resolve(true);
		});
		socket.once('error', () => resolve(false));
	});
}

/** A port in 56000-60999 that nothing on 127.0.0.1 listens on now. */
async function freePort() {
	for (;;) {
		const port = 56_000 + Math.floor(Math.random() * 5000);
		const free = await new Promise((resolve) => {
			const server = net.createServer();
			server.once('error', () => resolve(false));
			server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
		});
		if (free) return port;
	}
}
