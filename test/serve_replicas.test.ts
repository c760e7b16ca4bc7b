// Beyond one machine: two `sparq serve` processes (the compiled CLI) behind the
// round-robin proxy of scripts/proxy.mjs, on loopback. Requests spread over both
// replicas and give the same answers; a replica stopped with SIGTERM finishes its
// running stream, exits 0, and the proxy sends later requests to the other.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import OpenAI from 'openai';
import { ROOT, STORIES_MODEL, STORIES_TOK, needStories } from './helpers';

const CLI = path.join(ROOT, 'dist', 'cli.js');

/** starts a process and resolves with it and the first http:// URL it prints */
function start(args: string[]): Promise<{ proc: ChildProcess; url: string; out: () => string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /(http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) resolve({ proc, url: m[1]!, out: () => out });
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    proc.on('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}: ${out}`)));
    setTimeout(() => reject(new Error(`no URL from ${args.join(' ')} in 30 s: ${out}`)), 30000).unref();
  });
}

const exited = (p: ChildProcess) => new Promise<number | null>((r) => (p.exitCode !== null ? r(p.exitCode) : p.once('exit', (code) => r(code))));

describe('serve: replicas behind a load balancer', function () {
  this.timeout(120000);
  const procs: ChildProcess[] = [];
  let a = '', b = '', proxy = '';
  let replicaA: ChildProcess;
  let outA: () => string;

  before(async function () {
    needStories(this);
    if (!fs.existsSync(path.join(ROOT, 'dist', 'serve', 'server.js'))) {
      console.log('      (skipped: needs the compiled dist/ with the server: npx tsc -p tsconfig.json)');
      this.skip();
    }
    const replica = (id: string) => start([CLI, 'serve', '--model', STORIES_MODEL, '--tokenizer', STORIES_TOK, '--port', '0', '--max-sequences', '2', '--model-id', id]);
    const [ra, rb] = await Promise.all([replica('stories-a'), replica('stories-b')]);
    procs.push(ra.proc, rb.proc);
    [a, b, replicaA, outA] = [ra.url, rb.url, ra.proc, ra.out];
    const p = await start([path.join(ROOT, 'scripts', 'proxy.mjs'), '--port', '0', '--upstream', `${a},${b}`]);
    procs.push(p.proc);
    proxy = p.url;
  });
  after(async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    await Promise.all(procs.map(exited));
  });

  it('spreads requests over both replicas, with the same answers, streamed or not', async () => {
    const client = new OpenAI({ baseURL: `${proxy}/v1`, apiKey: 'none', maxRetries: 0 });
    const rs = await Promise.all(Array.from({ length: 6 }, () => client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 12, temperature: 0 })));
    expect(new Set(rs.map((r) => r.model))).to.deep.equal(new Set(['stories-a', 'stories-b']));
    expect(new Set(rs.map((r) => r.choices[0]!.text)).size).to.equal(1);
    let text = '';
    for await (const c of await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 12, temperature: 0, stream: true })) text += c.choices[0]?.text ?? '';
    expect(text).to.equal(rs[0]!.choices[0]!.text);
    const served = await Promise.all([a, b].map(async (u) => ((await (await fetch(`${u}/health`)).json()) as { requests: { completed: number } }).requests.completed));
    expect(served[0]! + served[1]!).to.equal(7);
    for (const n of served) expect(n).to.be.at.least(3);
  });

  it('a replica stopped with SIGTERM finishes its running stream and exits 0; the proxy routes around it', async () => {
    const res = await fetch(`${a}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 300, temperature: 0, stream: true }),
    });
    const reader = res.body!.getReader();
    let body = new TextDecoder().decode((await reader.read()).value);
    replicaA.kill('SIGTERM');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      body += new TextDecoder().decode(value);
    }
    expect(body.trimEnd().endsWith('data: [DONE]'), body.slice(-300)).to.equal(true);
    expect(await exited(replicaA)).to.equal(0);
    expect(outA()).to.match(/SIGTERM: finishing/);
    const client = new OpenAI({ baseURL: `${proxy}/v1`, apiKey: 'none', maxRetries: 0 });
    for (let i = 0; i < 4; i++) {
      const r = await client.chat.completions.create({ model: 'stories', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }).catch((e: Error) => e);
      // stories260K has no chat template: replica b answers 400 (not the proxy's 502)
      expect(r).to.be.instanceOf(OpenAI.BadRequestError);
      const c = await client.completions.create({ model: 'stories', prompt: 'The dog', max_tokens: 4 });
      expect(c.model).to.equal('stories-b');
    }
  });
});
