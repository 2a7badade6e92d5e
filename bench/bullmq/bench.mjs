// BullMQ's equivalent of redis-ql-bench: a pre-filled queue processed by one
// worker process with concurrency 50, against a private Redis started here.
// Not part of the build or of CI:  cd bench/bullmq && npm install && node bench.mjs [JOBS]
import { Queue, Worker } from 'bullmq';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

const jobs = Number(process.argv[2] ?? 100000);
const redisServer = process.env.REDIS_SERVER ?? 'redis-server';

const port = await new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});
const dir = mkdtempSync(join(tmpdir(), 'bullmq-bench-'));
const redis = spawn(redisServer, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
const cli = (...args) => execFileSync('redis-cli', ['-p', String(port), ...args]).toString();
for (let i = 0; ; i++) {
  try { cli('ping'); break; } catch { if (i > 200) throw new Error('redis-server did not answer'); await new Promise((r) => setTimeout(r, 20)); }
}
const connection = { host: '127.0.0.1', port };
const stats = () => {
  const calls = {};
  for (const line of cli('info', 'commandstats').split('\n')) {
    const m = line.match(/^cmdstat_([^:]+):calls=(\d+)/);
    if (m) calls[m[1]] = Number(m[2]);
  }
  const cpu = cli('info', 'cpu').split('\n').filter((l) => /^used_cpu_(sys|user):/.test(l)).reduce((s, l) => s + Number(l.split(':')[1]), 0);
  return { calls, cpu };
};

const queue = new Queue('bench', { connection });
for (let i = 0; i < jobs; i += 1000) {
  await queue.addBulk(Array.from({ length: Math.min(1000, jobs - i) }, (_, j) => ({ name: 'j', data: { n: i + j, text: 'lorem ipsum dolor sit amet' } })));
}
const before = stats();
let done = 0;
const started = process.hrtime.bigint();
const finished = new Promise((resolve) => {
  const worker = new Worker('bench', async () => { if (++done === jobs) resolve(worker); }, { connection, concurrency: 50 });
});
const worker = await finished;
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
const after = stats();
const executions = Object.keys(after.calls).reduce((s, k) => s + after.calls[k] - (before.calls[k] ?? 0), 0);
const connections = cli('client', 'list').trim().split('\n').length - 1;
console.log(JSON.stringify({
  peer: 'bullmq', jobs, concurrency: 50, seconds,
  jobs_per_s: jobs / seconds,
  redis_executions_per_job: executions / jobs,
  redis_cpu_s_per_1000: (after.cpu - before.cpu) * 1000 / jobs,
  connections_queue_and_worker: connections,
}));
await worker.close();
await queue.close();
redis.kill();
