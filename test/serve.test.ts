// The OpenAI-compatible server (createServer / `sparq serve`) on stories260K, through the
// official openai client and raw HTTP: answers equal the model's own, streaming and
// whole; validation and error bodies; the bounded queue (429), client disconnects,
// model errors mid-stream, and a short load test with autocannon.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import OpenAI from 'openai';
import { createServer, loadModel, renderChat, type GeneratedToken, type Model, type ModelServer } from '../lib/index';
import { ROOT, STORIES_DIR, STORIES_MODEL, STORIES_TOK, needStories } from './helpers';

interface AutocannonResult {
  errors: number;
  timeouts: number;
  non2xx: number;
  '2xx': number;
  requests: { total: number; average: number };
}
// autocannon ships no type declarations
// eslint-disable-next-line @typescript-eslint/no-require-imports
const autocannon = require('autocannon') as (o: Record<string, unknown>) => Promise<AutocannonResult>;

/** a template for a model without one: the messages' contents, one per line */
const TEMPLATE = '{% for m in messages %}{{ m.content }}\n{% endfor %}';
const KEY = 'sk-test-0123';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** the text and the count of tokens (the end token left out) a generation yields */
async function collect(gen: AsyncGenerator<GeneratedToken>, stopIds: readonly number[]): Promise<{ text: string; n: number }> {
  let text = '', n = 0;
  for await (const t of gen) {
    text += t.text;
    if (!stopIds.includes(t.id)) n++;
  }
  return { text, n };
}

/** The model seen through a wrapper: each token `ms` later; `fail` throws after 3 tokens of a prompt holding 'boom'. */
function wrapped(m: Model, ms: number, seen = { aborted: 0 }): Model {
  const wrap = async function* (g: AsyncGenerator<GeneratedToken>, fail: boolean) {
    let i = 0;
    try {
      for await (const t of g) {
        if (ms) await sleep(ms);
        if (fail && ++i > 3) throw new Error('boom: the model failed');
        yield t;
      }
    } catch (e) {
      if ((e as Error).name === 'AbortError') seen.aborted++;
      throw e;
    } finally {
      await g.return(undefined);
    }
  };
  return {
    config: m.config, tokenizer: m.tokenizer, stopIds: m.stopIds,
    get nativeBytes() { return m.nativeBytes; },
    generate: (p: string | number[], o: object) => wrap(m.generate(p, o), typeof p === 'string' ? p.includes('boom') : m.tokenizer.decode(p).includes('boom')),
    chat: (msgs: { content: string }[], o: object) => wrap(m.chat(msgs as never, o), msgs.some((x) => x.content.includes('boom'))),
  } as unknown as Model;
}

async function post(url: string, body: unknown, headers: Record<string, string> = { authorization: `Bearer ${KEY}` }, signal?: AbortSignal): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body), signal });
}

/** reads a streaming response's events until `n` data events came (or it ended) */
async function readEvents(res: Response, n = Infinity): Promise<string[]> {
  const reader = res.body!.getReader(), dec = new TextDecoder();
  const events: string[] = [];
  let buf = '';
  while (events.length < n) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
      events.push(buf.slice(0, i));
      buf = buf.slice(i + 2);
    }
  }
  if (n !== Infinity) reader.releaseLock();
  return events;
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(5);
  }
}

describe('serve: the OpenAI-compatible server', function () {
  this.timeout(60000);
  let model: Model, server: ModelServer, client: OpenAI, base = '';

  before(async function () {
    needStories(this);
    model = await loadModel(STORIES_MODEL, { tokenizer: STORIES_TOK, maxSequences: 4 });
    server = await createServer(model, { port: 0, apiKey: KEY, template: TEMPLATE, modelId: 'stories260K' });
    base = `${server.url}/v1`;
    client = new OpenAI({ baseURL: base, apiKey: KEY, maxRetries: 0 });
  });
  after(async () => {
    await server?.close({ drainSeconds: 1 });
    model?.dispose();
  });

  const greedy = (prompt: string | number[], maxTokens: number, extra: object = {}) => collect(model.generate(prompt, { maxTokens, temperature: 0, ...extra }), model.stopIds);

  it('binds 127.0.0.1, lists its one model and reports health (open without the key)', async () => {
    expect(server.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).to.deep.equal(['stories260K']);
    expect((await client.models.retrieve('stories260K')).id).to.equal('stories260K');
    const h = await fetch(`${server.url}/health`);
    expect(h.status).to.equal(200);
    const body = await h.json() as Record<string, unknown>;
    expect(body).to.include({ status: 'ok', model: 'stories260K', maxSequences: 4, queueLimit: 16, active: 0, queued: 0, maxSeq: 512 });
    expect(body.nativeBytes).to.be.a('number').above(0);
  });

  it('completions: greedy text, usage and finish_reason equal model.generate\'s', async () => {
    const prompt = 'Once upon a time';
    const want = await greedy(prompt, 24);
    const r = await client.completions.create({ model: 'stories260K', prompt, max_tokens: 24, temperature: 0 });
    expect(r.object).to.equal('text_completion');
    expect(r.model).to.equal('stories260K');
    expect(r.id).to.match(/^cmpl-/);
    expect(r.choices).to.have.length(1);
    expect(r.choices[0]!.text).to.equal(want.text);
    expect(r.choices[0]!.finish_reason).to.equal('length');
    const promptTokens = model.tokenizer.encode(prompt).length;
    expect(r.usage).to.deep.equal({ prompt_tokens: promptTokens, completion_tokens: 24, total_tokens: promptTokens + 24 });
    // token ids as the prompt; any model name is accepted
    const ids = model.tokenizer.encode(prompt);
    const r2 = await client.completions.create({ model: 'gpt-3.5-turbo-instruct', prompt: ids, max_tokens: 8, temperature: 0 });
    expect(r2.choices[0]!.text).to.equal((await greedy(ids, 8)).text);
    expect(r2.model).to.equal('stories260K');
  });

  it('completions streamed: the chunks add up to the same text, then finish_reason, usage and [DONE]', async () => {
    const prompt = 'The little dog';
    const want = await greedy(prompt, 20);
    const stream = await client.completions.create({ model: 'x', prompt, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '', finish: string | null = null, usage: OpenAI.CompletionUsage | null | undefined;
    for await (const c of stream) {
      expect(c.object).to.equal('text_completion');
      if (c.choices.length) {
        text += c.choices[0]!.text;
        if (c.choices[0]!.finish_reason) finish = c.choices[0]!.finish_reason;
      }
      if (c.usage) usage = c.usage;
    }
    expect(text).to.equal(want.text);
    expect(finish).to.equal('length');
    expect(usage).to.deep.equal({ prompt_tokens: model.tokenizer.encode(prompt).length, completion_tokens: 20, total_tokens: model.tokenizer.encode(prompt).length + 20 });
    // the raw stream: SSE framing, and [DONE] last
    const res = await post(`${base}/completions`, { prompt, max_tokens: 5, temperature: 0, stream: true });
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.match(/^text\/event-stream/);
    const events = await readEvents(res);
    expect(events[events.length - 1]).to.equal('data: [DONE]');
    for (const e of events) expect(e).to.match(/^data: /);
    const last = JSON.parse(events[events.length - 2]!.slice(6)) as { choices: { finish_reason: string }[]; usage?: unknown };
    expect(last.choices[0]!.finish_reason).to.equal('length');
    expect(last).to.not.have.property('usage');  // without include_usage
  });

  it('chat: whole and streamed answers equal model.chat with the same template', async () => {
    const messages = [{ role: 'system' as const, content: 'One day' }, { role: 'user' as const, content: 'a girl named Lily went to the park.' }];
    const want = await collect(model.chat(messages, { template: TEMPLATE, maxTokens: 30, temperature: 0 }), model.stopIds);
    const r = await client.chat.completions.create({ model: 'stories260K', messages, max_tokens: 30, temperature: 0 });
    expect(r.object).to.equal('chat.completion');
    expect(r.id).to.match(/^chatcmpl-/);
    expect(r.choices[0]!.message).to.include({ role: 'assistant', content: want.text });
    const promptTokens = model.tokenizer.encode(renderChat(model, messages, TEMPLATE), { bos: false, special: true }).length;
    expect(r.usage).to.deep.include({ prompt_tokens: promptTokens, completion_tokens: want.n, total_tokens: promptTokens + want.n });
    expect(r.choices[0]!.finish_reason).to.equal(want.n === 30 ? 'length' : 'stop');
    // max_completion_tokens is the same limit; content parts are joined
    const parts = [{ role: 'system' as const, content: 'One day' }, { role: 'user' as const, content: [{ type: 'text' as const, text: 'a girl named Lily ' }, { type: 'text' as const, text: 'went to the park.' }] }];
    const stream = await client.chat.completions.create({ model: 'stories260K', messages: parts, max_completion_tokens: 30, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '', role = '', finish: string | null = null, usage: OpenAI.CompletionUsage | null | undefined, chunks = 0;
    for await (const c of stream) {
      chunks++;
      expect(c.object).to.equal('chat.completion.chunk');
      if (c.choices.length) {
        if (c.choices[0]!.delta.role) role = c.choices[0]!.delta.role;
        text += c.choices[0]!.delta.content ?? '';
        finish = c.choices[0]!.finish_reason ?? finish;
      }
      if (c.usage) usage = c.usage;
    }
    expect(role).to.equal('assistant');
    expect(text).to.equal(want.text);
    expect(finish).to.equal(r.choices[0]!.finish_reason);
    expect(usage).to.deep.equal(r.usage);
    expect(chunks).to.be.greaterThan(3);
  });

  it('stop strings (one or up to four) end the text before them with finish_reason stop', async () => {
    const prompt = 'Once upon a time';
    const full = await greedy(prompt, 40);
    const words = full.text.split(' ').filter((w) => /^[a-z]+$/.test(w));
    const stop = ` ${words[Math.floor(words.length / 2)]}`;
    const want = await greedy(prompt, 40, { stop: [stop] });
    expect(want.text.length).to.be.below(full.text.length);
    const r = await client.completions.create({ model: 'x', prompt, max_tokens: 40, temperature: 0, stop });
    expect(r.choices[0]!.text).to.equal(want.text);
    expect(r.choices[0]!.finish_reason).to.equal('stop');
    expect(r.usage!.completion_tokens).to.equal(want.n);
    const stops = ['zzz', stop, 'qqq', 'xyzzy'];
    const s = await client.completions.create({ model: 'x', prompt, max_tokens: 40, temperature: 0, stop: stops, stream: true });
    let text = '', finish: string | null = null;
    for await (const c of s) {
      text += c.choices[0]?.text ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(text).to.equal(want.text);
    expect(finish).to.equal('stop');
    // a stop string the budget reaches exactly still reports 'stop'
    const exact = await client.completions.create({ model: 'x', prompt, max_tokens: want.n + 1, temperature: 0, stop });
    expect(exact.choices[0]).to.include({ text: want.text, finish_reason: 'stop' });
  });

  it('sampling: temperature, top_p and seed map to the sampler (same seed, same text as model.generate)', async () => {
    const prompt = 'Once upon a time';
    const want = await collect(model.generate(prompt, { maxTokens: 30, temperature: 0.9, topP: 0.95, seed: 1234 }), model.stopIds);
    const a = await client.completions.create({ model: 'x', prompt, max_tokens: 30, temperature: 0.9, top_p: 0.95, seed: 1234 });
    const b = await client.completions.create({ model: 'x', prompt, max_tokens: 30, temperature: 0.9, top_p: 0.95, seed: 1234 });
    expect(a.choices[0]!.text).to.equal(want.text);
    expect(b.choices[0]!.text).to.equal(want.text);
    // top_p 0: the most likely token each step (greedy)
    const g = await client.completions.create({ model: 'x', prompt, max_tokens: 12, temperature: 1, top_p: 0 });
    expect(g.choices[0]!.text).to.equal((await greedy(prompt, 12)).text);
  });

  it('concurrent requests each get the text they would get alone', async () => {
    const prompts = ['Once upon a time', 'The cat', 'Lily and Ben', 'One day, a big', 'Tom had a red ball', 'The sun was'];
    const want = [];
    for (const p of prompts) want.push((await greedy(p, 16)).text);
    const got = await Promise.all(prompts.map((p, i) => (i % 2
      ? client.completions.create({ model: 'x', prompt: p, max_tokens: 16, temperature: 0 }).then((r) => r.choices[0]!.text)
      : client.completions.create({ model: 'x', prompt: p, max_tokens: 16, temperature: 0, stream: true }).then(async (s) => {
        let t = '';
        for await (const c of s) t += c.choices[0]?.text ?? '';
        return t;
      }))));
    expect(got).to.deep.equal(want);
    expect(server.health()).to.include({ active: 0, queued: 0 });
  });

  it('rejects malformed requests with 400 and OpenAI error bodies', async () => {
    const chat = `${base}/chat/completions`, cmpl = `${base}/completions`;
    const msgs = [{ role: 'user', content: 'hi' }];
    const cases: [string, unknown, number, { type: string; code: string | null; param?: string | null }][] = [
      [chat, '{"messages": [', 400, { type: 'invalid_request_error', code: 'invalid_json' }],
      [chat, '', 400, { type: 'invalid_request_error', code: 'invalid_json' }],
      [chat, { messages: msgs, foo: 1 }, 400, { type: 'invalid_request_error', code: 'unknown_parameter', param: 'foo' }],
      [chat, { messages: [{ role: 'user', content: 'hi', extra: true }] }, 400, { type: 'invalid_request_error', code: 'unknown_parameter', param: 'messages[0].extra' }],
      [chat, { messages: msgs, max_tokens: 1000000 }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'max_tokens' }],
      [chat, { messages: msgs, max_completion_tokens: 513 }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'max_completion_tokens' }],
      [cmpl, { prompt: 'x', max_tokens: 0 }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'max_tokens' }],
      [cmpl, { prompt: 'Once upon a time '.repeat(200) }, 400, { type: 'invalid_request_error', code: 'context_length_exceeded', param: 'prompt' }],
      [chat, { messages: [{ role: 'user', content: 'the park '.repeat(300) }] }, 400, { type: 'invalid_request_error', code: 'context_length_exceeded', param: 'messages' }],
      [chat, { messages: msgs, temperature: 'hot' }, 400, { type: 'invalid_request_error', code: 'invalid_type', param: 'temperature' }],
      [chat, { messages: 'hi' }, 400, { type: 'invalid_request_error', code: 'invalid_type', param: 'messages' }],
      [chat, { messages: msgs, max_tokens: '8' }, 400, { type: 'invalid_request_error', code: 'invalid_type', param: 'max_tokens' }],
      [chat, { messages: msgs, stream: 'yes' }, 400, { type: 'invalid_request_error', code: 'invalid_type', param: 'stream' }],
      [chat, [1, 2], 400, { type: 'invalid_request_error', code: 'invalid_type' }],
      [chat, { model: 'x' }, 400, { type: 'invalid_request_error', code: 'missing_required_parameter', param: 'messages' }],
      [chat, { messages: [] }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'messages' }],
      [chat, { messages: [{ role: 'tool', content: 'x' }] }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'messages[0].role' }],
      [chat, { messages: msgs, n: 2 }, 400, { type: 'invalid_request_error', code: 'unsupported_value', param: 'n' }],
      [chat, { messages: msgs, temperature: 2.5 }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'temperature' }],
      [chat, { messages: msgs, top_p: 1.5 }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'top_p' }],
      [chat, { messages: msgs, frequency_penalty: 0.5 }, 400, { type: 'invalid_request_error', code: 'unsupported_value', param: 'frequency_penalty' }],
      [chat, { messages: msgs, stop: ['a', 'b', 'c', 'd', 'e'] }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'stop' }],
      [chat, { messages: msgs, stop: '' }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'stop' }],
      [chat, { messages: msgs, stop: 'x'.repeat(257) }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'stop' }],
      [cmpl, { prompt: 'x', stop: ['y', 'z'.repeat(100_000)] }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'stop[1]' }],
      [cmpl, { prompt: [] }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'prompt' }],
      [chat, { messages: msgs, stream_options: { include_usage: true, other: 1 } }, 400, { type: 'invalid_request_error', code: 'unknown_parameter', param: 'stream_options.other' }],
      [cmpl, { prompt: ['a', 'b'] }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'prompt' }],
      [cmpl, { prompt: [1, 100000] }, 400, { type: 'invalid_request_error', code: 'invalid_value', param: 'prompt[1]' }],
      [cmpl, { prompt: 'x', echo: true }, 400, { type: 'invalid_request_error', code: 'unsupported_value', param: 'echo' }],
      [`${base}/nope`, {}, 404, { type: 'invalid_request_error', code: 'unknown_url' }],
    ];
    for (const [url, body, status, want] of cases) {
      const r = await post(url, body);
      const j = await r.json() as { error: { message: string; type: string; param: string | null; code: string | null } };
      const what = `${url} ${JSON.stringify(body).slice(0, 80)}: ${JSON.stringify(j)}`;
      expect(r.status, what).to.equal(status);
      expect(Object.keys(j), what).to.deep.equal(['error']);
      expect(Object.keys(j.error).sort(), what).to.deep.equal(['code', 'message', 'param', 'type']);
      expect(j.error.message, what).to.be.a('string').with.length.above(5);
      expect(j.error.type, what).to.equal(want.type);
      expect(j.error.code, what).to.equal(want.code);
      if (want.param !== undefined) expect(j.error.param, what).to.equal(want.param);
    }
    // null for an optional field means "default"; the common fields clients send are accepted
    const ok = await post(chat, { model: 'gpt-4o', messages: [{ role: 'developer', content: 'hi' }], max_tokens: 2, temperature: null, stop: null, n: 1, user: 'u1', frequency_penalty: 0, presence_penalty: 0, logprobs: false, response_format: { type: 'text' } });
    expect(ok.status, await ok.clone().text()).to.equal(200);
    // the openai client raises its typed error with the server's message
    try {
      await client.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100000 });
      expect.fail('no error');
    } catch (e) {
      expect(e).to.be.instanceOf(OpenAI.BadRequestError);
      expect((e as InstanceType<typeof OpenAI.BadRequestError>).message).to.match(/max_tokens is 100000/);
    }
    expect(server.health()).to.include({ status: 'ok', active: 0, queued: 0 });
  });

  it('requires the API key on /v1 (401), not on /health', async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: KEY }, { authorization: `Bearer ${KEY}x` }] as Record<string, string>[]) {
      const r = await post(`${base}/completions`, { prompt: 'x', max_tokens: 1 }, headers);
      expect(r.status).to.equal(401);
      const j = await r.json() as { error: { type: string; code: string } };
      expect(j.error).to.include({ type: 'authentication_error', code: 'invalid_api_key' });
    }
    expect((await fetch(`${base}/models`)).status).to.equal(401);
    expect((await fetch(`${server.url}/health`)).status).to.equal(200);
    // a percent-encoded path reaches the same routes: it needs the key as well
    for (const p of ['/%761/completions', '/v%31/completions', '/%76%31/completions']) {
      const r = await post(`${server.url}${p}`, { prompt: 'x', max_tokens: 1 }, {});
      expect(r.status, p).to.equal(401);
    }
    expect((await fetch(`${server.url}/v%31/models`)).status).to.equal(401);
    const bad = new OpenAI({ baseURL: base, apiKey: 'nope', maxRetries: 0 });
    try {
      await bad.models.list();
      expect.fail('no error');
    } catch (e) {
      expect(e).to.be.instanceOf(OpenAI.AuthenticationError);
    }
  });

  it('answers chat with 400 when the model has no chat template and none was given', async () => {
    const s = await createServer(model, { port: 0 });
    try {
      const r = await post(`${s.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'hi' }] }, {});
      expect(r.status).to.equal(400);
      expect((await r.json() as { error: { code: string } }).error.code).to.equal('model_not_supported');
      expect((await post(`${s.url}/v1/completions`, { prompt: 'hi', max_tokens: 2 }, {})).status).to.equal(200);
      expect(s.modelId).to.equal('stories260K.bin');  // the file's base name
    } finally {
      await s.close();
    }
  });

  it('answers 429 with Retry-After when every sequence is busy and the queue is full; a client that leaves frees its place', async () => {
    const seen = { aborted: 0 };
    const s = await createServer(wrapped(model, 20, seen), { port: 0, maxSequences: 1, queue: 1 });
    const url = `${s.url}/v1/completions`, long = { prompt: 'Once upon a time', max_tokens: 400, temperature: 0, stream: true };
    const acs = [new AbortController(), new AbortController(), new AbortController()];
    try {
      const a = await post(url, long, {}, acs[0]!.signal);
      expect(a.status).to.equal(200);
      await readEvents(a, 2);  // generating
      const b = post(url, long, {}, acs[1]!.signal).catch(() => null);
      await until(() => s.health().queued === 1);
      expect(s.health()).to.include({ active: 1, queued: 1 });
      const c = await post(url, long, {}, acs[2]!.signal);
      expect(c.status).to.equal(429);
      expect(Number(c.headers.get('retry-after'))).to.be.within(1, 60);
      const j = await c.json() as { error: { type: string; code: string } };
      expect(j.error).to.include({ type: 'rate_limit_exceeded', code: 'queue_full' });
      expect(s.health().requests.rejected).to.equal(1);
      // the queued client leaves: its place frees, the running one goes on
      acs[1]!.abort();
      await b;
      await until(() => s.health().queued === 0);
      expect(s.health().active).to.equal(1);
      acs[0]!.abort();
      await until(() => s.health().active === 0);
      await until(() => seen.aborted === 1);
      expect(s.health().requests.aborted).to.equal(2);
    } finally {
      for (const ac of acs) ac.abort();
      await s.close({ drainSeconds: 1 });
    }
  });

  it('a client that disconnects mid-stream aborts its generation and frees its slot', async () => {
    const seen = { aborted: 0 };
    const s = await createServer(wrapped(model, 20, seen), { port: 0, maxSequences: 1, queue: 4, template: TEMPLATE });
    try {
      const ac = new AbortController();
      // 400 tokens at 20 ms: 8 s if it ran to the end
      const a = await post(`${s.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 400, temperature: 0, stream: true }, {}, ac.signal);
      expect(a.status).to.equal(200);
      await readEvents(a, 3);
      const t0 = performance.now();
      ac.abort();
      const b = await post(`${s.url}/v1/completions`, { prompt: 'Once upon a time', max_tokens: 5, temperature: 0 }, {});
      expect(b.status).to.equal(200);
      expect((await b.json() as { choices: { text: string }[] }).choices[0]!.text).to.equal((await greedy('Once upon a time', 5)).text);
      expect(performance.now() - t0).to.be.below(2000);
      expect(seen.aborted).to.equal(1);
      expect(s.health()).to.deep.include({ active: 0, queued: 0 });
      expect(s.health().requests).to.include({ aborted: 1, completed: 1 });
    } finally {
      await s.close({ drainSeconds: 1 });
    }
  });

  it('a model error mid-stream ends the stream with an error event (whole answers: 500); the server keeps serving', async () => {
    const s = await createServer(wrapped(model, 0), { port: 0, maxSequences: 2, template: TEMPLATE });
    try {
      const r = await post(`${s.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'boom' }], max_tokens: 20, stream: true }, {});
      expect(r.status).to.equal(200);
      const events = await readEvents(r);
      const last = events[events.length - 1]!;
      expect(last).to.match(/^data: \{"error"/);
      const err = (JSON.parse(last.slice(6)) as { error: { message: string; type: string } }).error;
      expect(err.type).to.equal('server_error');
      expect(err.message).to.match(/boom/);
      expect(events).to.not.include('data: [DONE]');
      // the openai client raises it as an APIError
      const c = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'none', maxRetries: 0 });
      let thrown: unknown;
      try {
        for await (const chunk of await c.completions.create({ model: 'x', prompt: 'boom', max_tokens: 20, stream: true })) void chunk;
      } catch (e) {
        thrown = e;
      }
      expect(thrown).to.be.instanceOf(OpenAI.APIError);
      const whole = await post(`${s.url}/v1/completions`, { prompt: 'boom', max_tokens: 20 }, {});
      expect(whole.status).to.equal(500);
      expect((await whole.json() as { error: { type: string } }).error.type).to.equal('server_error');
      const fine = await post(`${s.url}/v1/completions`, { prompt: 'Once', max_tokens: 4, temperature: 0 }, {});
      expect(fine.status).to.equal(200);
      expect(s.health()).to.deep.include({ status: 'ok', active: 0 });
      expect(s.health().requests.failed).to.equal(3);
    } finally {
      await s.close({ drainSeconds: 1 });
    }
  });

  it('close() lets running requests finish, answers new ones 503 and /health 503', async () => {
    const s = await createServer(wrapped(model, 10), { port: 0, maxSequences: 1, queue: 2 });
    const url = `${s.url}/v1/completions`;
    const a = post(url, { prompt: 'Once upon a time', max_tokens: 20, temperature: 0 }, {});
    await until(() => s.health().active === 1);
    const closed = s.close({ drainSeconds: 10 });
    const h = await fetch(`${s.url}/health`);
    expect(h.status).to.equal(503);
    expect((await h.json() as { status: string }).status).to.equal('closing');
    const late = await post(url, { prompt: 'x', max_tokens: 2 }, {});
    expect(late.status).to.equal(503);
    expect((await late.json() as { error: { code: string } }).error.code).to.equal('shutting_down');
    const done = await a;
    expect(done.status).to.equal(200);
    expect((await done.json() as { choices: { text: string }[] }).choices[0]!.text).to.equal((await greedy('Once upon a time', 20)).text);
    await closed;
  });

  it('the README\'s server example runs as written on stories260K', async () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const code = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!).find((b) => b.includes('createServer('));
    expect(code, 'README has the server example').to.be.a('string');
    const lines = code!.split('\n');
    const imports = lines.filter((l) => l.startsWith('import ')).map((l) => l.replace(/from 'sparq'/, `from ${JSON.stringify(path.join(ROOT, 'lib', 'index'))}`));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq-serve-readme-'));
    try {
      const file = path.join(dir, 'example.ts');
      fs.writeFileSync(file, `${imports.join('\n')}\nprocess.chdir(${JSON.stringify(STORIES_DIR)});\n(async () => {\n${lines.filter((l) => !l.startsWith('import ')).join('\n')}\n})().catch((e) => { console.error(e); process.exit(1); });\n`);
      const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: ROOT, encoding: 'utf8', timeout: 60000 });
      expect(r.status, r.stderr).to.equal(0);
      expect(r.stdout).to.include((await greedy('Once upon a time', 16)).text);
      expect(r.stdout).to.match(/completed: 1/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('load: autocannon, 8 connections for 3 s on /v1/completions, without an error', async () => {
    const r = await autocannon({
      url: `${base}/completions`, connections: 8, duration: 3, method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 }),
    });
    expect(r.errors).to.equal(0);
    expect(r.timeouts).to.equal(0);
    expect(r.non2xx).to.equal(0);
    expect(r['2xx']).to.be.greaterThan(20);
    // the requests autocannon left unanswered at the end are aborted
    await until(() => server.health().active === 0);
    expect(server.health()).to.include({ status: 'ok', active: 0, queued: 0 });
  });
});
